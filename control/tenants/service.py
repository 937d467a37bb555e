"""Tenant creation (with its first owner) and closure, each audited."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from control.audit import store as audit
from control.audit.actions import AuditAction
from control.audit.store import Actor, subject_of
from control.keys import store as key_store
from control.keys.service import KeyRevocationFollowUp, revoke_key
from control.members.service import NewMember, add_member
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
            personal={"name": name},
            subject=subject_of("tenant", tenant.id),
            now=now,
        )
        owner = await add_member(
            conn, actor, tenant_id=tenant.id, email=owner_email, role=Role.OWNER, now=now
        )
    return NewTenant(tenant=tenant, owner=owner)


async def close_tenant(
    engine: AsyncEngine,
    follow_up: KeyRevocationFollowUp,
    actor: Actor,
    *,
    tenant_id: str,
    now: dt.datetime | None = None,
) -> dict[str, object]:
    """End the contract: members can no longer sign in, every live key is destroyed (its
    live sessions revoked and their proxies cleared); the retention worker anonymises the
    rest after the grace period (control/retention/rules.py)."""
    now = now or dt.datetime.now(dt.UTC)
    async with engine.begin() as conn:
        if not await store.close_tenant(conn, tenant_id, now=now):
            if not await store.tenant_exists(conn, tenant_id):
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
        live = await key_store.live_key_ids(conn, tenant_id)
    for key_id in live:
        await revoke_key(engine, follow_up, actor, tenant_id=tenant_id, key_id=key_id, now=now)
    return {
        "event": "tenant_closed",
        "tenant_id": tenant_id,
        "keys_destroyed": len(live),
        "closed_at": now.isoformat(),
    }
