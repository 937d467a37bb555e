"""Writing and reading the append-only audit log.

`record` runs on the caller's connection, so the audit row commits or rolls back with the
action it describes. Details are redacted before they are stored.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Collection
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from control.audit.actions import ActorType, AuditAction
from control.db.schema import audit_events
from core.redaction import redact_value


@dataclasses.dataclass(frozen=True, slots=True)
class Actor:
    type: ActorType
    id: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class AuditEvent:
    id: int
    occurred_at: dt.datetime
    tenant_id: str | None
    actor_type: str
    actor_id: str | None
    action: str
    outcome: str
    target_type: str | None
    target_id: str | None
    session_id: str | None
    candidate_id: str | None
    ip: str | None
    user_agent: str | None
    request_id: str | None
    details: dict[str, Any]


async def record(
    conn: AsyncConnection,
    actor: Actor,
    action: AuditAction,
    *,
    tenant_id: str | None,
    target_type: str | None = None,
    target_id: str | None = None,
    session_id: str | None = None,
    candidate_id: str | None = None,
    outcome: str = "success",
    details: dict[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> int:
    """Append one audit row on `conn` (inside the caller's transaction); return its id."""
    result = await conn.execute(
        insert(audit_events)
        .values(
            occurred_at=now or dt.datetime.now(dt.UTC),
            tenant_id=tenant_id,
            actor_type=actor.type.value,
            actor_id=actor.id,
            action=action.value,
            outcome=outcome,
            target_type=target_type,
            target_id=target_id,
            session_id=session_id,
            session_id_text=session_id,
            candidate_id=candidate_id,
            candidate_id_text=candidate_id,
            ip=actor.ip,
            user_agent=actor.user_agent,
            request_id=actor.request_id,
            details=json.dumps(redact_value(details or {}), sort_keys=True),
        )
        .returning(audit_events.c.id)
    )
    return int(result.scalar_one())


async def list_events(
    conn: AsyncConnection,
    tenant_id: str,
    *,
    limit: int,
    before_id: int | None = None,
    actions: Collection[str] = (),
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> list[AuditEvent]:
    """A tenant's events, newest first; `before_id` continues a previous page."""
    query = select(audit_events).where(audit_events.c.tenant_id == tenant_id)
    if before_id is not None:
        query = query.where(audit_events.c.id < before_id)
    if actions:
        query = query.where(audit_events.c.action.in_(list(actions)))
    if since is not None:
        query = query.where(audit_events.c.occurred_at >= since)
    if until is not None:
        query = query.where(audit_events.c.occurred_at < until)
    rows = await conn.execute(query.order_by(audit_events.c.id.desc()).limit(limit))
    return [_to_event(row) for row in rows]


def _to_event(row: Any) -> AuditEvent:
    return AuditEvent(
        id=row.id,
        occurred_at=row.occurred_at,
        tenant_id=row.tenant_id,
        actor_type=row.actor_type,
        actor_id=row.actor_id,
        action=row.action,
        outcome=row.outcome,
        target_type=row.target_type,
        target_id=row.target_id,
        # The text copies survive a hard-delete of the session or candidate.
        session_id=row.session_id_text,
        candidate_id=row.candidate_id_text,
        ip=row.ip,
        user_agent=row.user_agent,
        request_id=row.request_id,
        details=json.loads(row.details),
    )
