"""Reading the usage dead letters (what the ingester could not store), audited."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from control.audit import store as audit
from control.audit.store import Actor
from control.usage import store


async def read_dead_letters(
    engine: AsyncEngine, actor: Actor, *, tenant_id: str | None, limit: int
) -> list[dict[str, Any]]:
    """The newest dead letters (one tenant's, if named). The read is audited: letters
    name tenants and sessions."""
    async with engine.begin() as conn:
        letters = await store.list_dead_letters(conn, limit=limit, tenant_id=tenant_id)
        await audit.record_operator_read(
            conn,
            actor,
            command="usage dead-letters",
            target_type="usage_dead_letters",
            tenant=tenant_id,
            rows=len(letters),
        )
    return letters
