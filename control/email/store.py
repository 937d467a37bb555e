"""Queries on the email outbox."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

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


async def list_messages(conn: AsyncConnection) -> list[dict[str, object]]:
    rows = await conn.execute(select(email_outbox).order_by(email_outbox.c.id))
    return [dict(row._mapping) for row in rows]


async def delete_to(conn: AsyncConnection, email: str) -> None:
    await conn.execute(delete(email_outbox).where(email_outbox.c.to_email == email))


async def delete_of_tenant(conn: AsyncConnection, tenant_id: str) -> None:
    await conn.execute(delete(email_outbox).where(email_outbox.c.tenant_id == tenant_id))
