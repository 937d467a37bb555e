"""Candidates' own rights: sign-in with their token, export everything held about them,
and ask for deletion (carried out by the retention worker, control/retention)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control.audit import store as audit
from control.audit.actions import AuditAction
from control.audit.store import Actor, AuditEvent
from control.db.schema import (
    audit_events,
    candidates,
    deletion_requests,
    invites,
    sessions,
    tenants,
    usage_records,
)
from control.web.errors import ApiError, unauthenticated
from core.tokens import TokenKind, hash_token, new_token, token_kind

DELETION_WINDOW = dt.timedelta(days=30)


@dataclasses.dataclass(frozen=True, slots=True)
class Candidate:
    id: str
    email: str
    created_at: dt.datetime
    last_active_at: dt.datetime | None
    deletion_notice_at: dt.datetime | None


def _candidate(row: Any) -> Candidate:
    return Candidate(
        id=row.id,
        email=row.email,
        created_at=row.created_at,
        last_active_at=row.last_active_at,
        deletion_notice_at=row.deletion_notice_at,
    )


async def issue_token(conn: AsyncConnection, candidate_id: str) -> str:
    """A new candidate token (mxc_…); the previous one stops working."""
    token = new_token(TokenKind.CANDIDATE)
    await conn.execute(
        update(candidates)
        .where(candidates.c.id == candidate_id)
        .values(token_hash=hash_token(token))
    )
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
        row = (
            await conn.execute(
                update(candidates)
                .where(candidates.c.token_hash == hash_token(token))
                .values(last_active_at=now, deletion_notice_at=None)
                .returning(*candidates.c)
            )
        ).first()
    if row is None:
        raise _unauthenticated()
    return _candidate(row)


async def request_deletion(
    engine: AsyncEngine, actor: Actor, candidate: Candidate, *, now: dt.datetime
) -> dict[str, Any]:
    """Record a deletion request (a second request returns the open one), audited."""
    async with engine.begin() as conn:
        open_request = (
            await conn.execute(
                select(deletion_requests).where(
                    deletion_requests.c.candidate_id == candidate.id,
                    deletion_requests.c.completed_at.is_(None),
                )
            )
        ).first()
        if open_request is not None:
            return _request_out(open_request)
        request_id = str(uuid.uuid4())
        due_at = now + DELETION_WINDOW
        values = {
            "id": request_id,
            "candidate_id": candidate.id,
            "candidate_id_text": candidate.id,
            "requested_at": now,
            "due_at": due_at,
        }
        await conn.execute(insert(deletion_requests).values(**values))
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
        row = (
            await conn.execute(
                select(deletion_requests).where(deletion_requests.c.id == request_id)
            )
        ).one()
    return _request_out(row)


def _request_out(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "requested_at": row.requested_at,
        "due_at": row.due_at,
        "completed_at": row.completed_at,
    }


def _event_out(event: AuditEvent) -> dict[str, Any]:
    return dataclasses.asdict(event)


async def export(engine: AsyncEngine, candidate: Candidate) -> dict[str, Any]:
    """Everything held about the candidate, and nothing about anyone else."""
    async with engine.connect() as conn:
        session_rows = list(
            await conn.execute(
                select(
                    sessions.c.id,
                    sessions.c.tenant_id,
                    tenants.c.name.label("company"),
                    sessions.c.state,
                    sessions.c.deadline_at,
                    sessions.c.created_at,
                    sessions.c.ended_at,
                    sessions.c.soft_deleted_at,
                )
                .join(tenants, tenants.c.id == sessions.c.tenant_id)
                .where(sessions.c.candidate_id == candidate.id)
                .order_by(sessions.c.created_at)
            )
        )
        session_ids = [row.id for row in session_rows]
        usage = [
            dict(row._mapping)
            for row in await conn.execute(
                select(usage_records)
                .where(usage_records.c.session_id.in_(session_ids))
                .order_by(usage_records.c.started_at, usage_records.c.record_id)
            )
        ]
        about = await audit.to_events(
            conn,
            list(
                await conn.execute(
                    select(audit_events)
                    .where(
                        or_(
                            audit_events.c.candidate_id_text == candidate.id,
                            audit_events.c.session_id_text.in_(session_ids),
                        )
                    )
                    .order_by(audit_events.c.id)
                )
            ),
        )
        invite_rows = await conn.execute(
            select(
                invites.c.id,
                invites.c.tenant_id,
                invites.c.assessment_name,
                invites.c.created_at,
                invites.c.expires_at,
                invites.c.accepted_at,
                invites.c.session_id,
            )
            .where(invites.c.candidate_email == candidate.email)
            .order_by(invites.c.created_at)
        )
        requests = await conn.execute(
            select(deletion_requests)
            .where(deletion_requests.c.candidate_id == candidate.id)
            .order_by(deletion_requests.c.requested_at)
        )
        return {
            "candidate": dataclasses.asdict(candidate),
            "invites": [dict(row._mapping) for row in invite_rows],
            "sessions": [dict(row._mapping) for row in session_rows],
            "usage_records": usage,
            "audit_events": [_event_out(e) for e in about],
            "key_unwraps": [_event_out(e) for e in about if e.action == AuditAction.KEY_UNWRAP],
            "deletion_requests": [_request_out(row) for row in requests],
        }
