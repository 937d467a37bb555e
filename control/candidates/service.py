"""Candidates' own rights: sign-in with their token, export everything held about them,
and ask for deletion (carried out by the retention worker, control/retention)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control.audit import store as audit
from control.audit.actions import ActorType, AuditAction
from control.audit.store import Actor, AuditEvent
from control.candidates import store
from control.candidates.store import Candidate
from control.web.errors import ApiError, unauthenticated
from core.tokens import TokenKind, new_token, token_kind

DELETION_WINDOW = dt.timedelta(days=30)


async def issue_token(conn: AsyncConnection, candidate_id: str) -> str:
    """A new candidate token (mxc_…); the previous one stops working."""
    token = new_token(TokenKind.CANDIDATE)
    await store.set_token(conn, candidate_id, token)
    return token


def _unauthenticated() -> ApiError:
    return unauthenticated(
        "missing or invalid candidate token: send your mxc_ token as a Bearer token",
        realm="metrux-candidate",
    )


async def sign_in(engine: AsyncEngine, token: str | None, now: dt.datetime) -> Candidate:
    """The candidate this token belongs to. Using it is signing in: it restarts the
    inactivity clock and cancels a pending pre-deletion notice."""
    if token is None or token_kind(token) is not TokenKind.CANDIDATE:
        raise _unauthenticated()
    async with engine.begin() as conn:
        candidate = await store.touch_by_token(conn, token, now)
    if candidate is None:
        raise _unauthenticated()
    return candidate


async def request_deletion(
    engine: AsyncEngine, actor: Actor, candidate: Candidate, *, now: dt.datetime
) -> dict[str, Any]:
    """Record a deletion request (a second request returns the open one), audited."""
    async with engine.begin() as conn:
        open_request = await store.open_deletion_request(conn, candidate.id)
        if open_request is not None:
            return _request_out(open_request)
        request_id = str(uuid.uuid4())
        due_at = now + DELETION_WINDOW
        row = await store.insert_deletion_request(
            conn, request_id=request_id, candidate_id=candidate.id, now=now, due_at=due_at
        )
        await audit.record(
            conn,
            actor,
            AuditAction.CANDIDATE_DELETE_REQUEST,
            tenant_id=None,
            target_type="deletion_request",
            target_id=request_id,
            candidate_id=candidate.id,
            details={"due_at": due_at.isoformat()},
            now=now,
        )
    return _request_out(row)


def _request_out(row: dict[str, Any]) -> dict[str, Any]:
    return {key: row[key] for key in ("id", "requested_at", "due_at", "completed_at")}


def _event_out(event: AuditEvent, candidate_id: str, roles: dict[str, str]) -> dict[str, Any]:
    """An audit event as the candidate's export shows it: their own address and browser
    where they acted; anyone else only by role (never an id, address or user agent)."""
    # A candidate acting before their record existed (accepting the invite) has no actor id.
    acting = event.actor_id or event.candidate_id
    if event.actor_type == ActorType.CANDIDATE.value and acting == candidate_id:
        actor: dict[str, Any] = {
            "type": "you",
            "ip": event.ip,
            "user_agent": event.user_agent,
        }
    elif event.actor_type == ActorType.MEMBER.value:
        actor = {"type": "company staff", "role": roles.get(event.actor_id or "", "member")}
    else:
        actor = {"type": _OTHER_ACTORS.get(event.actor_type, "the service")}
    return {
        "id": event.id,
        "occurred_at": event.occurred_at,
        "action": event.action,
        "outcome": event.outcome,
        "actor": actor,
        "session_id": event.session_id,
        "details": {k: v for k, v in event.details.items() if k in _EXPORTED_DETAILS},
    }


_OTHER_ACTORS = {
    ActorType.OPERATOR.value: "platform operator",
    ActorType.PROXY.value: "your session's proxy",
    ActorType.SYSTEM.value: "the service",
}
# Details that describe the event to its subject; none names or locates a person.
_EXPORTED_DETAILS = frozenset(
    [
        "assessment_name",
        "calls",
        "deadline_at",
        "delete_after",
        "due_at",
        "expires_at",
        "purpose",
        "reason",
    ]
)


async def export(engine: AsyncEngine, candidate: Candidate) -> dict[str, Any]:
    """Everything held about the candidate, and nothing about anyone else."""
    async with engine.connect() as conn:
        session_rows = await store.sessions_of(conn, candidate.id)
        session_ids = [row["id"] for row in session_rows]
        usage = await store.usage_of_sessions(conn, session_ids)
        about = await audit.events_about_candidate(conn, candidate.id, session_ids)
        staff = {e.actor_id for e in about if e.actor_type == ActorType.MEMBER.value}
        roles = await store.roles_of_members(conn, {m for m in staff if m})
        invite_rows = await store.invites_to(conn, candidate.email)
        requests = await store.deletion_requests_of(conn, candidate.id)
    return {
        "candidate": dataclasses.asdict(candidate),
        "invites": invite_rows,
        "sessions": session_rows,
        "usage_records": usage,
        "audit_events": [_event_out(e, candidate.id, roles) for e in about],
        "key_unwraps": [
            _event_out(e, candidate.id, roles) for e in about if e.action == AuditAction.KEY_UNWRAP
        ],
        "deletion_requests": [_request_out(row) for row in requests],
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def export_json(data: Any) -> str:
    """An export as JSON text (times as ISO 8601), for the API and the my-data page."""
    return json.dumps(data, default=_json_default)
