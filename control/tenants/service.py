"""Tenant creation (with its first owner) and closure, each audited."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from control.audit import store as audit
from control.audit.actions import AuditAction
from control.audit.store import Actor
from control.db.schema import api_keys, tenants
from control.keys.service import revoke_key
from control.members.service import NewMember, add_member
from control.retention.rules import TENANT_GRACE
from control.sessions.signals import SignalPublisher
from control.tenants import store
from control.tenants.store import TenantRecord
from control.web.endpoint import Role
from control.web.errors import ApiError, not_found


@dataclasses.dataclass(frozen=True, slots=True)
class NewTenant:
    tenant: TenantRecord
    owner: NewMember


async def create_tenant(
    engine: AsyncEngine,
    actor: Actor,
    *,
    name: str,
    owner_email: str,
    now: dt.datetime | None = None,
) -> NewTenant:
    now = now or dt.datetime.now(dt.UTC)
    async with engine.begin() as conn:
        tenant = await store.insert_tenant(conn, tenant_id=str(uuid.uuid4()), name=name, now=now)
        await audit.record(
            conn,
            actor,
            AuditAction.TENANT_CREATE,
            tenant_id=tenant.id,
            target_type="tenant",
            target_id=tenant.id,
            details={"name": name},
            now=now,
        )
        owner = await add_member(
            conn, actor, tenant_id=tenant.id, email=owner_email, role=Role.OWNER, now=now
        )
    return NewTenant(tenant=tenant, owner=owner)


async def close_tenant(
    engine: AsyncEngine,
    signals: SignalPublisher,
    actor: Actor,
    *,
    tenant_id: str,
    now: dt.datetime | None = None,
) -> dict[str, object]:
    """End the contract: members can no longer sign in, every live key is destroyed (its
    live sessions revoked and their proxies cleared); the retention worker anonymises the
    rest after the grace period."""
    now = now or dt.datetime.now(dt.UTC)
    async with engine.begin() as conn:
        closed = await conn.execute(
            update(tenants)
            .where(tenants.c.id == tenant_id, tenants.c.closed_at.is_(None))
            .values(closed_at=now)
        )
        if closed.rowcount != 1:
            exists = (
                await conn.execute(select(tenants.c.id).where(tenants.c.id == tenant_id))
            ).first()
            if exists is None:
                raise not_found("tenant")
            raise ApiError(409, "conflict_error", "the tenant is already closed")
        await audit.record(
            conn,
            actor,
            AuditAction.TENANT_CLOSE,
            tenant_id=tenant_id,
            target_type="tenant",
            target_id=tenant_id,
            now=now,
        )
        live = [
            row.id
            for row in await conn.execute(
                select(api_keys.c.id).where(
                    api_keys.c.tenant_id == tenant_id, api_keys.c.revoked_at.is_(None)
                )
            )
        ]
    for key_id in live:
        await revoke_key(engine, signals, actor, tenant_id=tenant_id, key_id=key_id, now=now)
    return {
        "event": "tenant_closed",
        "tenant_id": tenant_id,
        "keys_destroyed": len(live),
        "anonymised_after": (now + TENANT_GRACE).isoformat(),
    }
