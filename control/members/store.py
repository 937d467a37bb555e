"""Queries on members. Token hashes never leave this module."""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from control.db.schema import members, tenants
from core.tokens import hash_token


class DuplicateMember(Exception):
    """The tenant already has an active member with this email."""


@dataclasses.dataclass(frozen=True, slots=True)
class MemberRecord:
    id: str
    tenant_id: str
    email: str
    role: str
    created_at: dt.datetime
    created_by: str | None
    revoked_at: dt.datetime | None


_PUBLIC_COLUMNS = (
    members.c.id,
    members.c.tenant_id,
    members.c.email,
    members.c.role,
    members.c.created_at,
    members.c.created_by,
    members.c.revoked_at,
)


def _record(row: Any) -> MemberRecord:
    return MemberRecord(**{column.name: getattr(row, column.name) for column in _PUBLIC_COLUMNS})


async def insert_member(
    conn: AsyncConnection,
    *,
    member_id: str,
    tenant_id: str,
    email: str,
    role: str,
    token_hash: str,
    created_by: str | None,
    now: dt.datetime,
) -> MemberRecord:
    if await find_active_by_email(conn, tenant_id, email) is not None:
        raise DuplicateMember(email)
    try:
        row = (
            await conn.execute(
                insert(members)
                .values(
                    id=member_id,
                    tenant_id=tenant_id,
                    email=email,
                    role=role,
                    token_hash=token_hash,
                    created_at=now,
                    created_by=created_by,
                )
                .returning(*_PUBLIC_COLUMNS)
            )
        ).one()
    except IntegrityError as exc:
        raise DuplicateMember(email) from exc
    return _record(row)


async def find_active_by_email(
    conn: AsyncConnection, tenant_id: str, email: str
) -> MemberRecord | None:
    row = (
        await conn.execute(
            select(*_PUBLIC_COLUMNS).where(
                members.c.tenant_id == tenant_id,
                members.c.email == email,
                members.c.revoked_at.is_(None),
            )
        )
    ).first()
    return _record(row) if row else None


async def list_members(conn: AsyncConnection, tenant_id: str) -> list[MemberRecord]:
    rows = await conn.execute(
        select(*_PUBLIC_COLUMNS)
        .where(members.c.tenant_id == tenant_id)
        .order_by(members.c.created_at, members.c.id)
    )
    return [_record(row) for row in rows]


async def get_member(conn: AsyncConnection, tenant_id: str, member_id: str) -> MemberRecord | None:
    row = (
        await conn.execute(
            select(*_PUBLIC_COLUMNS).where(
                members.c.id == member_id, members.c.tenant_id == tenant_id
            )
        )
    ).first()
    return _record(row) if row else None


async def count_active_owners(conn: AsyncConnection, tenant_id: str) -> int:
    result = await conn.execute(
        select(func.count()).where(
            members.c.tenant_id == tenant_id,
            members.c.role == "owner",
            members.c.revoked_at.is_(None),
        )
    )
    return int(result.scalar_one())


async def revoke_member(
    conn: AsyncConnection, tenant_id: str, member_id: str, *, now: dt.datetime
) -> MemberRecord | None:
    return await _update_active(conn, tenant_id, member_id, revoked_at=now)


async def set_role(
    conn: AsyncConnection, tenant_id: str, member_id: str, role: str
) -> MemberRecord | None:
    return await _update_active(conn, tenant_id, member_id, role=role)


async def _update_active(
    conn: AsyncConnection, tenant_id: str, member_id: str, **values: Any
) -> MemberRecord | None:
    """Change an active member of the tenant; None if there is none."""
    row = (
        await conn.execute(
            update(members)
            .where(
                members.c.id == member_id,
                members.c.tenant_id == tenant_id,
                members.c.revoked_at.is_(None),
            )
            .values(**values)
            .returning(*_PUBLIC_COLUMNS)
        )
    ).first()
    return _record(row) if row else None


async def find_by_token(conn: AsyncConnection, token: str) -> MemberRecord | None:
    """The active member whose API token this is, in a tenant that is not closed."""
    row = (
        await conn.execute(
            select(*_PUBLIC_COLUMNS)
            .join(tenants, tenants.c.id == members.c.tenant_id)
            .where(
                members.c.token_hash == hash_token(token),
                members.c.revoked_at.is_(None),
                tenants.c.closed_at.is_(None),
            )
        )
    ).first()
    return _record(row) if row else None


async def find_active_by_email_anywhere(
    conn: AsyncConnection, email: str, tenant_id: str | None
) -> list[MemberRecord]:
    """Every active membership of this email in tenants that are not closed (in one tenant
    only, if named): who an identity provider's user may sign in as."""
    query = (
        select(*_PUBLIC_COLUMNS)
        .join(tenants, tenants.c.id == members.c.tenant_id)
        .where(
            members.c.email == email,
            members.c.revoked_at.is_(None),
            tenants.c.closed_at.is_(None),
        )
    )
    if tenant_id is not None:
        query = query.where(members.c.tenant_id == tenant_id)
    return [_record(row) for row in await conn.execute(query)]


async def lock_tenant(conn: AsyncConnection, tenant_id: str) -> None:
    """Row-lock the member's tenant for the rest of the transaction, so membership changes
    in one tenant serialise (Postgres; SQLite's BEGIN IMMEDIATE already serialises writers)."""
    await conn.execute(select(tenants.c.id).where(tenants.c.id == tenant_id).with_for_update())


async def member_ids_of(conn: AsyncConnection, tenant_id: str) -> list[str]:
    rows = await conn.execute(select(members.c.id).where(members.c.tenant_id == tenant_id))
    return [row.id for row in rows]


async def anonymise_members(conn: AsyncConnection, tenant_id: str, *, now: dt.datetime) -> int:
    """Erase every member's email in the tenant and end their access for good; how many."""
    member_ids = await member_ids_of(conn, tenant_id)
    for member_id in member_ids:
        await conn.execute(
            update(members)
            .where(members.c.id == member_id)
            .values(
                email=f"anonymised-{member_id}@anonymised.invalid",
                # A hash of a token nobody holds: the member can never sign in again.
                token_hash=hash_token(secrets.token_urlsafe(32)),
                revoked_at=func.coalesce(members.c.revoked_at, now),
            )
        )
    return len(member_ids)
