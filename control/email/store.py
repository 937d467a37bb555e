"""Queries on the email outbox."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from control.db.due import Due
from control.db.schema import email_outbox


async def insert_message(
    conn: AsyncConnection,
    *,
    tenant_id: str | None,
    to: str,
    subject: str,
    body: str,
    now: dt.datetime,
) -> None:
    await conn.execute(
        insert(email_outbox).values(
            tenant_id=tenant_id, to_email=to, subject=subject, body=body, created_at=now
        )
    )


async def list_undelivered(conn: AsyncConnection) -> list[dict[str, object]]:
    rows = await conn.execute(
        select(email_outbox)
        .where(email_outbox.c.delivered_at.is_(None))
        .order_by(email_outbox.c.id)
        .with_for_update()
    )
    return [dict(row._mapping) for row in rows]


async def list_of_tenant(conn: AsyncConnection, tenant_id: str) -> list[dict[str, object]]:
    """A tenant's messages in the outbox, newest first (for its console's invites page)."""
    rows = await conn.execute(
        select(email_outbox)
        .where(email_outbox.c.tenant_id == tenant_id)
        .order_by(email_outbox.c.id.desc())
    )
    return [dict(row._mapping) for row in rows]


async def mark_delivered(
    conn: AsyncConnection, message_id: int, *, body: str, now: dt.datetime
) -> None:
    """The message was handed over: keep only `body` (its links hashed)."""
    await conn.execute(
        update(email_outbox)
        .where(email_outbox.c.id == message_id)
        .values(delivered_at=now, body=body)
    )


# --- retention (control/retention/rules.py) ---------------------------------------------


def due_delivered() -> Due:
    return Due(select(email_outbox.c.id).where(email_outbox.c.delivered_at.is_not(None)))


async def delete_delivered(conn: AsyncConnection, ids: list[int]) -> int:
    result = await conn.execute(
        delete(email_outbox).where(
            email_outbox.c.id.in_(ids), email_outbox.c.delivered_at.is_not(None)
        )
    )
    return result.rowcount


def due_undelivered(created_before: dt.datetime) -> Due:
    return Due(
        select(email_outbox.c.id).where(
            email_outbox.c.delivered_at.is_(None), email_outbox.c.created_at <= created_before
        )
    )


async def delete_undelivered(
    conn: AsyncConnection, ids: list[int], *, created_before: dt.datetime
) -> int:
    result = await conn.execute(
        delete(email_outbox).where(
            email_outbox.c.id.in_(ids),
            email_outbox.c.delivered_at.is_(None),
            email_outbox.c.created_at <= created_before,
        )
    )
    return result.rowcount


async def delete_to(conn: AsyncConnection, email: str) -> None:
    await conn.execute(delete(email_outbox).where(email_outbox.c.to_email == email))


async def delete_of_tenant(conn: AsyncConnection, tenant_id: str) -> None:
    await conn.execute(delete(email_outbox).where(email_outbox.c.tenant_id == tenant_id))
