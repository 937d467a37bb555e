"""Queries on tenants and platform operators."""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from control.db.due import Due
from control.db.schema import operators, tenants
from core.tokens import hash_token


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


async def tenant_name(conn: AsyncConnection, tenant_id: str) -> str:
    return str(
        (await conn.execute(select(tenants.c.name).where(tenants.c.id == tenant_id))).scalar_one()
    )


async def tenant_exists(conn: AsyncConnection, tenant_id: str) -> bool:
    row = (await conn.execute(select(tenants.c.id).where(tenants.c.id == tenant_id))).first()
    return row is not None


async def close_tenant(conn: AsyncConnection, tenant_id: str, *, now: dt.datetime) -> bool:
    """Mark an open tenant closed; False if there is no such open tenant."""
    result = await conn.execute(
        update(tenants)
        .where(tenants.c.id == tenant_id, tenants.c.closed_at.is_(None))
        .values(closed_at=now)
    )
    return result.rowcount == 1


async def insert_operator(
    conn: AsyncConnection, *, operator_id: str, email: str, token: str, now: dt.datetime
) -> None:
    await conn.execute(
        insert(operators).values(
            id=operator_id, email=email, token_hash=hash_token(token), created_at=now
        )
    )


async def find_operator_by_token(conn: AsyncConnection, token: str) -> str | None:
    """The id of the active operator whose token this is."""
    row = (
        await conn.execute(
            select(operators.c.id).where(
                operators.c.token_hash == hash_token(token), operators.c.revoked_at.is_(None)
            )
        )
    ).first()
    return row.id if row else None


# --- retention (control/retention/rules.py) ---------------------------------------------

ANONYMISED_TENANT = "anonymised tenant"


def _anonymise_due(closed_before: dt.datetime) -> ColumnElement[bool]:
    return (tenants.c.closed_at <= closed_before) & tenants.c.anonymised_at.is_(None)


def due_anonymise(closed_before: dt.datetime) -> Due:
    return Due(select(tenants.c.id).where(_anonymise_due(closed_before)))


async def anonymise_tenant(
    conn: AsyncConnection, tenant_id: str, *, now: dt.datetime, closed_before: dt.datetime | None
) -> bool:
    """Replace the tenant's name; False if it is not (or no longer) due."""
    condition = tenants.c.id == tenant_id
    if closed_before is not None:
        condition = condition & _anonymise_due(closed_before)
    changed = await conn.execute(
        update(tenants).where(condition).values(name=ANONYMISED_TENANT, anonymised_at=now)
    )
    return changed.rowcount == 1
