"""Platform operators: people at the service's operator who may read any tenant's data
(GET routes only, with X-Metrux-Tenant); control/identity/middleware.py audits every read in the
affected tenant's log."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from control.audit import store as audit
from control.audit.actions import AuditAction
from control.audit.store import Actor
from control.tenants import store
from core.tokens import TokenKind, new_token


async def create_operator(
    engine: AsyncEngine, actor: Actor, *, email: str, now: dt.datetime | None = None
) -> dict[str, str]:
    """A new operator and their token (mxo_…, shown once)."""
    now = now or dt.datetime.now(dt.UTC)
    operator_id = str(uuid.uuid4())
    token = new_token(TokenKind.OPERATOR)
    async with engine.begin() as conn:
        await store.insert_operator(
            conn, operator_id=operator_id, email=email, token=token, now=now
        )
        await audit.record(
            conn,
            actor,
            AuditAction.OPERATOR_CREATE,
            tenant_id=None,
            target_type="operator",
            target_id=operator_id,
            now=now,
        )
    return {"operator_id": operator_id, "operator_token": token}
