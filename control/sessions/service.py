"""Sessions: issue, read, and move through their lifecycle, each step audited."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from control.audit import store as audit
from control.audit.actions import AuditAction
from control.audit.store import Actor
from control.candidates import store as candidate_store
from control.db.schema import api_keys
from control.sessions import store
from control.sessions.lifecycle import (
    SIGNALS,
    InvalidTransition,
    SessionEvent,
    SessionState,
    next_state,
)
from control.sessions.schemas import DEFAULT_DURATION, MAX_DURATION, SessionCreate
from control.sessions.signals import SignalPublisher
from control.sessions.store import SessionRecord
from control.web.errors import ApiError, not_found
from core.tokens import TokenKind, hash_token, new_token

_EVENT_ACTIONS = {
    SessionEvent.END: AuditAction.SESSION_END,
    SessionEvent.GRADING_COMPLETE: AuditAction.SESSION_GRADING_COMPLETE,
    SessionEvent.REVOKE: AuditAction.SESSION_REVOKE,
    SessionEvent.EXPIRE: AuditAction.SESSION_EXPIRE,
}


@dataclasses.dataclass(frozen=True, slots=True)
class NewSession:
    session: SessionRecord
    sandbox_token: str
    bootstrap_token: str

    def __repr__(self) -> str:
        return f"<NewSession {self.session.id}>"


async def create_session(
    engine: AsyncEngine,
    signals: SignalPublisher,
    actor: Actor,
    *,
    tenant_id: str,
    request: SessionCreate,
    now: dt.datetime | None = None,
) -> NewSession:
    now = now or dt.datetime.now(dt.UTC)
    deadline = request.deadline or now + DEFAULT_DURATION
    if deadline <= now:
        raise ApiError(422, "validation_error", "deadline must be in the future")
    if deadline - now > MAX_DURATION:
        raise ApiError(422, "validation_error", "deadline must be within 14 days")
    sandbox_token, bootstrap_token = new_token(TokenKind.SESSION), new_token(TokenKind.BOOTSTRAP)
    async with engine.begin() as conn:
        key_query = select(api_keys.c.id).where(
            api_keys.c.tenant_id == tenant_id, api_keys.c.revoked_at.is_(None)
        )
        if request.api_key_id is not None:
            key_query = key_query.where(api_keys.c.id == request.api_key_id)
        key = (
            await conn.execute(key_query.order_by(api_keys.c.created_at.desc()).limit(1))
        ).first()
        if key is None:
            if request.api_key_id is not None:
                raise not_found("live key")
            raise ApiError(409, "conflict_error", "the tenant has no live key: upload one first")
        candidate_id = await candidate_store.get_or_create(conn, request.candidate_email, now=now)
        session = await store.insert_session(
            conn,
            id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            candidate_id=candidate_id,
            api_key_id=key.id,
            state=SessionState.ISSUED.value,
            token_hash=hash_token(sandbox_token),
            bootstrap_token_hash=hash_token(bootstrap_token),
            deadline_at=deadline,
            max_requests=request.max_requests,
            max_output_tokens=request.max_output_tokens,
            allowed_models=request.allowed_models,
            created_at=now,
            created_by=actor.id,
            updated_at=now,
        )
        await audit.record(
            conn,
            actor,
            AuditAction.SESSION_CREATE,
            tenant_id=tenant_id,
            target_type="session",
            target_id=session.id,
            session_id=session.id,
            candidate_id=candidate_id,
            details={"key_id": key.id, "deadline_at": deadline.isoformat()},
            now=now,
        )
    await signals.announce(session.id, session.state, None)
    return NewSession(session, sandbox_token, bootstrap_token)


async def transition(
    engine: AsyncEngine,
    signals: SignalPublisher,
    actor: Actor,
    *,
    tenant_id: str,
    session_id: str,
    event: SessionEvent,
    now: dt.datetime | None = None,
) -> SessionRecord:
    """Apply a lifecycle event, audit it, then tell the session's proxy."""
    now = now or dt.datetime.now(dt.UTC)
    async with engine.begin() as conn:
        session = await store.get_session(conn, session_id, tenant_id=tenant_id, for_update=True)
        if session is None:
            raise not_found("session")
        try:
            state = next_state(session.state, event)
        except InvalidTransition as exc:
            raise ApiError(409, "conflict_error", str(exc)) from None
        session = await store.set_state(conn, session_id, state, now=now)
        await audit.record(
            conn,
            actor,
            _EVENT_ACTIONS[event],
            tenant_id=tenant_id,
            target_type="session",
            target_id=session_id,
            session_id=session_id,
            candidate_id=session.candidate_id,
            now=now,
        )
    await signals.announce(session_id, state, SIGNALS[event])
    return session
