"""Queries on report links. Token hashes never leave this module."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from control.db.schema import report_links
from core.tokens import hash_token


async def insert_link(
    conn: AsyncConnection,
    *,
    token: str,
    session_id: str,
    tenant_id: str,
    expires_at: dt.datetime,
    created_by: str | None,
    now: dt.datetime,
) -> None:
    await conn.execute(
        insert(report_links).values(
            token_hash=hash_token(token),
            session_id=session_id,
            tenant_id=tenant_id,
            expires_at=expires_at,
            created_at=now,
            created_by=created_by,
        )
    )


async def link_tenant(
    conn: AsyncConnection, token: str, session_id: str, now: dt.datetime
) -> str | None:
    """The tenant a live link for this session belongs to, else None."""
    row = (
        await conn.execute(
            select(report_links.c.tenant_id).where(
                report_links.c.token_hash == hash_token(token),
                report_links.c.session_id == session_id,
                report_links.c.expires_at > now,
            )
        )
    ).first()
    return None if row is None else str(row.tenant_id)
