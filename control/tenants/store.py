"""Queries on tenants."""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from control.db.schema import tenants


@dataclasses.dataclass(frozen=True, slots=True)
class TenantRecord:
    id: str
    name: str
    created_at: dt.datetime
    closed_at: dt.datetime | None


async def insert_tenant(
    conn: AsyncConnection, *, tenant_id: str, name: str, now: dt.datetime
) -> TenantRecord:
    await conn.execute(insert(tenants).values(id=tenant_id, name=name, created_at=now))
    return TenantRecord(id=tenant_id, name=name, created_at=now, closed_at=None)


async def lock_tenant(conn: AsyncConnection, tenant_id: str) -> None:
    """Row-lock the tenant for the rest of the transaction (Postgres; SQLite's BEGIN
    IMMEDIATE already serialises writers)."""
    await conn.execute(select(tenants.c.id).where(tenants.c.id == tenant_id).with_for_update())
