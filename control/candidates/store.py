"""Queries on candidates."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from control.db.schema import candidates


async def get_or_create(conn: AsyncConnection, email: str, *, now: dt.datetime) -> str:
    """The id of the candidate with this (normalised) email, created if new."""
    existing = (
        await conn.execute(select(candidates.c.id).where(candidates.c.email == email))
    ).first()
    if existing is not None:
        await conn.execute(
            update(candidates).where(candidates.c.id == existing.id).values(last_active_at=now)
        )
        return str(existing.id)
    candidate_id = str(uuid.uuid4())
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(candidates).values(
                    id=candidate_id, email=email, created_at=now, last_active_at=now
                )
            )
    except IntegrityError:
        # Created concurrently by another request: use that row.
        row = (await conn.execute(select(candidates.c.id).where(candidates.c.email == email))).one()
        return str(row.id)
    return candidate_id
