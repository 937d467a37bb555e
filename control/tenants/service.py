"""Tenant creation, with its first owner, audited in one transaction."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from control.audit import store as audit
from control.audit.actions import AuditAction
from control.audit.store import Actor
from control.members.service import NewMember, add_member
from control.tenants import store
from control.tenants.store import TenantRecord
from control.web.endpoint import Role


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
