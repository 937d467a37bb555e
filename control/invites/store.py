"""Queries on invites. Token hashes never leave this module."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import and_, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from control.db.due import Due
from control.db.schema import invites, tenants
from core.tokens import hash_token


async def insert_invite(conn: AsyncConnection, *, token: str, **values: Any) -> dict[str, Any]:
    invite_id = values["id"]
    await conn.execute(insert(invites).values(token_hash=hash_token(token), **values))
    row = (await conn.execute(select(invites).where(invites.c.id == invite_id))).one()
    return dict(row._mapping)


async def find_valid(
    conn: AsyncConnection, token: str, now: dt.datetime, *, lock: bool = False
) -> dict[str, Any] | None:
    """The invite (with its company's name) for a live token, or None: one query whatever
    the reason for a miss (unknown, expired, accepted, tenant closed)."""
    query = (
        select(invites, tenants.c.name.label("company"))
        .join(tenants, tenants.c.id == invites.c.tenant_id)
        .where(
            invites.c.token_hash == hash_token(token),
            invites.c.accepted_at.is_(None),
            invites.c.expires_at > now,
            tenants.c.closed_at.is_(None),
        )
    )
    if lock:
        query = query.with_for_update(of=invites)
    row = (await conn.execute(query)).first()
    return dict(row._mapping) if row else None


async def mark_accepted(
    conn: AsyncConnection, invite_id: str, *, session_id: str, now: dt.datetime
) -> bool:
    """False if it was accepted concurrently."""
    result = await conn.execute(
        update(invites)
        .where(invites.c.id == invite_id, invites.c.accepted_at.is_(None))
        .values(accepted_at=now, session_id=session_id)
    )
    return result.rowcount == 1


async def list_invites(conn: AsyncConnection, tenant_id: str) -> list[dict[str, Any]]:
    rows = await conn.execute(
        select(invites)
        .where(invites.c.tenant_id == tenant_id)
        .order_by(invites.c.created_at.desc())
    )
    return [dict(row._mapping) for row in rows]


ERASED_EMAIL = "erased@erased.invalid"


async def erase_candidate_email(conn: AsyncConnection, email: str) -> None:
    await conn.execute(
        update(invites)
        .where(invites.c.candidate_email == email)
        .values(candidate_email=ERASED_EMAIL)
    )


async def erase_emails_of_tenant(conn: AsyncConnection, tenant_id: str) -> int:
    result = await conn.execute(
        update(invites).where(invites.c.tenant_id == tenant_id).values(candidate_email=ERASED_EMAIL)
    )
    return result.rowcount


# --- retention (control/retention/rules.py) ---------------------------------------------


def _unaccepted_expired(expired_before: dt.datetime) -> Any:
    return and_(
        invites.c.accepted_at.is_(None),
        invites.c.expires_at <= expired_before,
        invites.c.candidate_email != ERASED_EMAIL,
    )


def due_unaccepted(expired_before: dt.datetime) -> Due:
    """Invites nobody accepted, expired before `expired_before`, still holding an address."""
    return Due(select(invites.c.id).where(_unaccepted_expired(expired_before)))


async def erase_unaccepted(
    conn: AsyncConnection, ids: list[str], *, expired_before: dt.datetime, now: dt.datetime
) -> int:
    result = await conn.execute(
        update(invites)
        .where(invites.c.id.in_(ids), _unaccepted_expired(expired_before))
        .values(candidate_email=ERASED_EMAIL, email_erased_at=now)
    )
    return result.rowcount
