"""Sessions: issue, read, and move through their lifecycle, each step audited."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control.audit import store as audit
from control.audit.actions import AuditAction
from control.audit.store import Actor
from control.candidates import store as candidate_store
from control.keys import store as key_store
from control.keys.health import KeyStatus
from control.keys.store import KeyRecord
from control.sessions import store
from control.sessions.lifecycle import (
    SIGNALS,
    InvalidTransition,
    SessionEvent,
    SessionState,
    is_live,
    next_state,
)
from control.sessions.schemas import DEFAULT_DURATION, MAX_DURATION, SessionCreate
from control.sessions.signals import SignalPublisher
from control.sessions.store import SessionRecord
from control.usage import store as usage_store
from control.web.errors import ApiError, not_found
from core.tokens import TokenKind, hash_token, new_token, tokens_match
from core.transcript import genesis

_EVENT_ACTIONS = {
    SessionEvent.END: AuditAction.SESSION_END,
    SessionEvent.GRADING_COMPLETE: AuditAction.SESSION_GRADING_COMPLETE,
    SessionEvent.REVOKE: AuditAction.SESSION_REVOKE,
    SessionEvent.EXPIRE: AuditAction.SESSION_EXPIRE,
    SessionEvent.SUBMIT: AuditAction.SESSION_SUBMIT,
}


@dataclasses.dataclass(frozen=True, slots=True)
class NewSession:
    session: SessionRecord
    sandbox_token: str
    bootstrap_token: str | None  # None: issued to a candidate; the platform asks for one
    grader_token: str

    def __repr__(self) -> str:
        return f"<NewSession {self.session.id}>"


@dataclasses.dataclass(frozen=True, slots=True)
class SessionTerms:
    """What a new session is for and what it may do."""

    candidate_email: str
    deadline: dt.datetime
    api_key_id: str | None = None
    max_requests: int | None = None
    max_output_tokens: int | None = None
    allowed_models: list[str] | None = None
    allowed_betas: list[str] | None = None
    allowed_server_tools: list[str] | None = None


def _list(values: list[Any] | None) -> list[str] | None:
    return None if values is None else sorted(set(values))


async def audit_session(
    conn: AsyncConnection,
    actor: Actor,
    action: AuditAction,
    *,
    tenant_id: str,
    session_id: str,
    candidate_id: str | None,
    now: dt.datetime,
    details: dict[str, str] | None = None,
) -> None:
    """The audit row of an event that happened to a session."""
    await audit.record(
        conn,
        actor,
        action,
        tenant_id=tenant_id,
        target_type="session",
        target_id=session_id,
        session_id=session_id,
        candidate_id=candidate_id,
        details=details,
        now=now,
    )


def check_deadline(deadline: dt.datetime, now: dt.datetime) -> None:
    if deadline <= now:
        raise ApiError(422, "validation_error", "deadline must be in the future")
    if deadline - now > MAX_DURATION:
        raise ApiError(422, "validation_error", "deadline must be within 14 days")


async def _session_key(conn: AsyncConnection, tenant_id: str, key_id: str | None) -> KeyRecord:
    """The key a new session will use: the one named, else the tenant's default. A key
    Anthropic refused is named by its last four so the customer knows which to replace."""
    if key_id is not None:
        key = await key_store.get_key(conn, tenant_id, key_id)
        if key is None or key.status is KeyStatus.REVOKED:
            raise not_found("live key")
    else:
        key = await key_store.get_default(conn, tenant_id)
        if key is None:
            raise ApiError(
                409,
                "conflict_error",
                "the tenant has no default key: upload one, or make a live key the default "
                "with POST /v1/keys/{id}/default",
            )
    if key.status is KeyStatus.INVALID:
        raise ApiError(
            409,
            "conflict_error",
            f"key …{key.last_four} was refused by Anthropic ({key.status_reason}); upload a "
            "working key and make it the default, or ask for a new check with "
            "POST /v1/keys/{id}/check",
        )
    return key


async def issue_session(
    conn: AsyncConnection,
    actor: Actor,
    *,
    tenant_id: str,
    terms: SessionTerms,
    now: dt.datetime,
    with_bootstrap: bool = True,
) -> NewSession:
    """Create a session and its tokens on `conn`, audited; the caller owns the transaction
    and announces the new state after commit. `with_bootstrap=False` (a candidate accepting
    an invite) issues no attach credential: whoever runs the sandbox asks for one."""
    key = await _session_key(conn, tenant_id, terms.api_key_id)
    sandbox, bootstrap, grader = (
        new_token(TokenKind.SESSION),
        new_token(TokenKind.BOOTSTRAP),
        new_token(TokenKind.GRADER),
    )
    candidate_id = await candidate_store.get_or_create(conn, terms.candidate_email, now=now)
    session = await store.insert_session(
        conn,
        id=str(uuid.uuid4()),
        tenant_id=tenant_id,
        candidate_id=candidate_id,
        api_key_id=key.id,
        state=SessionState.ISSUED.value,
        token_hash=hash_token(sandbox),
        grader_token_hash=hash_token(grader),
        bootstrap_token_hash=hash_token(bootstrap) if with_bootstrap else None,
        deadline_at=terms.deadline,
        max_requests=terms.max_requests,
        max_output_tokens=terms.max_output_tokens,
        allowed_models=terms.allowed_models,
        allowed_betas=terms.allowed_betas,
        allowed_server_tools=terms.allowed_server_tools,
        created_at=now,
        created_by=actor.id,
        updated_at=now,
    )
    await audit_session(
        conn,
        actor,
        AuditAction.SESSION_CREATE,
        tenant_id=tenant_id,
        session_id=session.id,
        candidate_id=candidate_id,
        now=now,
        details={"key_id": key.id, "deadline_at": terms.deadline.isoformat()},
    )
    return NewSession(session, sandbox, bootstrap if with_bootstrap else None, grader)


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
    check_deadline(deadline, now)
    terms = SessionTerms(
        candidate_email=request.candidate_email,
        deadline=deadline,
        api_key_id=request.api_key_id,
        max_requests=request.max_requests,
        max_output_tokens=request.max_output_tokens,
        allowed_models=request.allowed_models,
        allowed_betas=request.allowed_betas,
        allowed_server_tools=_list(request.allowed_server_tools),
    )
    async with engine.begin() as conn:
        created = await issue_session(conn, actor, tenant_id=tenant_id, terms=terms, now=now)
    await signals.announce(created.session.id, created.session.state, None)
    return created


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
        await audit_session(
            conn,
            actor,
            _EVENT_ACTIONS[event],
            tenant_id=tenant_id,
            session_id=session_id,
            candidate_id=session.candidate_id,
            now=now,
        )
        if event is SessionEvent.GRADING_COMPLETE:
            await _seal(conn, actor, session, now)
    await signals.announce(session_id, state, SIGNALS[event])
    return session


async def _seal(
    conn: AsyncConnection, actor: Actor, session: SessionRecord, now: dt.datetime
) -> None:
    """Write the transcript chain's last link and call count to the audit log: from then
    on the chain of what was recorded cannot be changed without the seal disagreeing."""
    head = await usage_store.chain_head(conn, session.id)
    calls, link = head if head is not None else (0, genesis(session.id))
    await audit_session(
        conn,
        actor,
        AuditAction.SESSION_SEAL,
        tenant_id=session.tenant_id,
        session_id=session.id,
        candidate_id=session.candidate_id,
        now=now,
        details={"calls": str(calls), "final_link": link},
    )


async def authenticate_sandbox(engine: AsyncEngine, session_id: str, token: str) -> SessionRecord:
    """The session whose candidate token this is; 401 for anything else."""
    async with engine.connect() as conn:
        session = await store.get_session(conn, session_id)
    if session is None or session.token_hash is None or not tokens_match(token, session.token_hash):
        raise ApiError(401, "authentication_error", "invalid session token")
    return session


# An attached proxy may still deliver the records of its last calls this long after its
# session ended or it was fenced (it is told at once; its drain and flush take seconds).
RECORD_TAIL = dt.timedelta(minutes=15)


@dataclasses.dataclass(frozen=True, slots=True)
class AttachedProxy:
    """A proxy, identified by its credential, and the session it was attached to."""

    session: SessionRecord
    credential: store.ProxyCredential

    @property
    def current(self) -> bool:
        """Not fenced out by a later attach."""
        return self.credential.fenced_at is None and (
            self.credential.epoch == self.session.proxy_epoch
        )

    def may_record(self, started_at: dt.datetime, now: dt.datetime) -> bool:
        """Whether a record of a call started at `started_at` is taken from this proxy:
        from the live proxy while its session is live or lately ended; from a fenced one
        only for calls it started before its fence, and not long after."""
        fenced_at = self.credential.fenced_at
        if fenced_at is not None:
            return started_at < fenced_at and now - fenced_at <= RECORD_TAIL
        ended_at = self.session.ended_at
        return is_live(self.session.state) or (
            ended_at is not None and now - ended_at <= RECORD_TAIL
        )


async def authenticate_proxy(engine: AsyncEngine, session_id: str, token: str) -> AttachedProxy:
    """The attached proxy that holds this credential, current or fenced; 401 otherwise."""
    async with engine.connect() as conn:
        found = await store.get_attached_proxy(conn, session_id, hash_token(token))
    if found is None:
        raise ApiError(401, "authentication_error", "invalid proxy credential")
    return AttachedProxy(*found)


async def reread_proxy(engine: AsyncEngine, proxy: AttachedProxy) -> AttachedProxy | None:
    """The same proxy with its session and credential as they are now; None once the
    session is gone (deleted by retention)."""
    async with engine.connect() as conn:
        found = await store.get_attached_proxy(conn, proxy.session.id, proxy.credential.token_hash)
    return AttachedProxy(*found) if found is not None else None


async def issue_bootstrap_token(
    engine: AsyncEngine,
    actor: Actor,
    *,
    tenant_id: str,
    session_id: str,
    now: dt.datetime | None = None,
) -> str:
    """A fresh single-use bootstrap token for a live session's next proxy, for whoever runs
    the sandbox (never the candidate); any earlier unused one stops working. The attach it
    allows is another audited unwrap, and fences the session's current proxy."""
    now = now or dt.datetime.now(dt.UTC)
    bootstrap = new_token(TokenKind.BOOTSTRAP)
    async with engine.begin() as conn:
        session = await store.get_session(conn, session_id, tenant_id=tenant_id, for_update=True)
        if session is None:
            raise not_found("session")
        if not is_live(session.state):
            raise ApiError(
                409, "conflict_error", f"session is {session.state.value}; it cannot be resumed"
            )
        if now >= session.deadline_at:
            raise ApiError(409, "conflict_error", "session deadline has passed")
        await store.update_session(
            conn,
            session.id,
            now=now,
            bootstrap_token_hash=hash_token(bootstrap),
            bootstrap_used_at=None,
        )
        await audit_session(
            conn,
            actor,
            AuditAction.SESSION_BOOTSTRAP_TOKEN,
            tenant_id=session.tenant_id,
            session_id=session.id,
            candidate_id=session.candidate_id,
            now=now,
        )
    return bootstrap


async def issue_grader_token(
    engine: AsyncEngine,
    signals: SignalPublisher,
    actor: Actor,
    *,
    tenant_id: str,
    session_id: str,
    now: dt.datetime | None = None,
) -> str:
    """A new grader token for a live session (the previous one stops working)."""
    now = now or dt.datetime.now(dt.UTC)
    token = new_token(TokenKind.GRADER)
    async with engine.begin() as conn:
        session = await store.get_session(conn, session_id, tenant_id=tenant_id, for_update=True)
        if session is None:
            raise not_found("session")
        if not is_live(session.state):
            raise ApiError(409, "conflict_error", f"session is {session.state.value}")
        await store.update_session(conn, session_id, now=now, grader_token_hash=hash_token(token))
        await audit_session(
            conn,
            actor,
            AuditAction.SESSION_GRADER_TOKEN,
            tenant_id=tenant_id,
            session_id=session_id,
            candidate_id=session.candidate_id,
            now=now,
        )
    await signals.announce_grader(session_id)
    return token
