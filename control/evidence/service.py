"""Gathering a session's evidence, and the one-hour links to its report page."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from control.audit import store as audit
from control.audit.actions import AuditAction
from control.audit.store import Actor, AuditEvent
from control.evidence import store
from control.sessions import store as session_store
from control.sessions.store import SessionRecord
from control.usage import store as usage_store
from control.web.errors import not_found
from core.tokens import TokenKind, new_token, token_kind

LINK_LIFETIME = dt.timedelta(hours=1)


@dataclasses.dataclass(frozen=True, slots=True)
class Evidence:
    session: SessionRecord
    records: list[dict[str, Any]]
    events: list[AuditEvent]
    chain: list[dict[str, Any]]


async def gather(engine: AsyncEngine, tenant_id: str, session_id: str) -> Evidence:
    """The session, its usage records, its audit events and its chain entries."""
    async with engine.connect() as conn:
        session = await session_store.get_session(conn, session_id, tenant_id=tenant_id)
        if session is None:
            raise not_found("session")
        records = await usage_store.list_records(conn, session_id)
        events = await audit.events_of_session(conn, tenant_id, session_id)
        entries = await usage_store.chain_entries(conn, session_id)
    return Evidence(session, records, events, entries)


async def create_link(
    engine: AsyncEngine, actor: Actor, *, tenant_id: str, session_id: str, now: dt.datetime
) -> tuple[str, dt.datetime]:
    """A new report-link token for the session, and when it expires; audited."""
    token = new_token(TokenKind.REPORT)
    expires_at = now + LINK_LIFETIME
    async with engine.begin() as conn:
        if await session_store.get_session(conn, session_id, tenant_id=tenant_id) is None:
            raise not_found("session")
        await store.insert_link(
            conn,
            token=token,
            session_id=session_id,
            tenant_id=tenant_id,
            expires_at=expires_at,
            created_by=actor.id,
            now=now,
        )
        await audit.record(
            conn,
            actor,
            AuditAction.SESSION_REPORT_LINK,
            tenant_id=tenant_id,
            target_type="session",
            target_id=session_id,
            session_id=session_id,
            details={"expires_at": expires_at.isoformat()},
            now=now,
        )
    return token, expires_at


async def link_tenant(engine: AsyncEngine, session_id: str, token: str | None) -> str | None:
    """The tenant a live report link for this session belongs to, else None."""
    if token is None or token_kind(token) is not TokenKind.REPORT:
        return None
    async with engine.connect() as conn:
        return await store.link_tenant(conn, token, session_id, dt.datetime.now(dt.UTC))
