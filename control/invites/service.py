"""Invites: create and send, look up, accept (which issues the candidate's session).

Lookups are what an attacker would brute-force, so every miss looks the same: unknown,
expired and already-accepted tokens all get the same 404 after the same single query.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from control.audit import store as audit
from control.audit.actions import AuditAction
from control.audit.store import Actor
from control.candidates import service as candidate_service
from control.candidates import store as candidate_store
from control.email.sender import Email, EmailError, EmailSender
from control.invites import store
from control.invites.schemas import InviteCreate
from control.sessions.service import NewSession, SessionTerms, issue_session
from control.sessions.signals import SignalPublisher
from control.tenants import store as tenant_store
from control.web.errors import ApiError
from core.tokens import TokenKind, new_token


@dataclasses.dataclass(frozen=True, slots=True)
class NewInvite:
    invite: dict[str, Any]
    token: str
    email_error: str | None = None  # the invite exists; the customer can send the link

    def __repr__(self) -> str:
        return f"<NewInvite {self.invite['id']}>"


def _public(row: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "id",
        "candidate_email",
        "assessment_name",
        "expires_at",
        "created_at",
        "accepted_at",
        "session_id",
    )
    return {k: row[k] for k in keys}


def invite_not_found() -> ApiError:
    return ApiError(404, "not_found_error", "invite not found or no longer valid")


async def create_invite(
    engine: AsyncEngine,
    sender: EmailSender,
    actor: Actor,
    *,
    tenant_id: str,
    request: InviteCreate,
    public_url: str,
    now: dt.datetime | None = None,
) -> NewInvite:
    now = now or dt.datetime.now(dt.UTC)
    token = new_token(TokenKind.INVITE)
    invite_id = str(uuid.uuid4())
    async with engine.begin() as conn:
        company = await tenant_store.tenant_name(conn, tenant_id)
        row = await store.insert_invite(
            conn,
            token=token,
            id=invite_id,
            tenant_id=tenant_id,
            candidate_email=request.candidate_email,
            assessment_name=request.assessment_name,
            session_minutes=request.session_minutes,
            max_requests=request.max_requests,
            max_output_tokens=request.max_output_tokens,
            allowed_models=request.allowed_models,
            allowed_betas=request.allowed_betas,
            allowed_server_tools=(
                None
                if request.allowed_server_tools is None
                else sorted(set(request.allowed_server_tools))
            ),
            expires_at=now + dt.timedelta(hours=request.expires_in_hours),
            created_at=now,
            created_by=actor.id,
        )
        # An invite restarts a known candidate's inactivity clock (control/retention).
        await candidate_store.touch_by_email(conn, request.candidate_email, now)
        await audit.record(
            conn,
            actor,
            AuditAction.INVITE_CREATE,
            tenant_id=tenant_id,
            target_type="invite",
            target_id=invite_id,
            details={"assessment_name": request.assessment_name},
            now=now,
        )
    link = f"{public_url}/v1/invites/{token}"
    try:
        await sender.send(
            Email(
                to=request.candidate_email,
                subject=f"{company} invites you to an assessment: {request.assessment_name}",
                body=(
                    f'{company} has invited you to the assessment "{request.assessment_name}".\n\n'
                    f"Open your invitation: {public_url}/invite/{token}\n\n"
                    f"Or through the API: GET {link}, then POST {link}/accept\n\n"
                    f"The invitation expires at {row['expires_at'].isoformat()}."
                ),
                tenant_id=tenant_id,
            )
        )
    except EmailError as exc:
        return NewInvite(_public(row), token, email_error=str(exc))
    return NewInvite(_public(row), token)


async def lookup_invite(
    engine: AsyncEngine, token: str, now: dt.datetime | None = None
) -> dict[str, Any]:
    async with engine.connect() as conn:
        row = await store.find_valid(conn, token, now or dt.datetime.now(dt.UTC))
    if row is None:
        raise invite_not_found()
    return {
        "assessment_name": row["assessment_name"],
        "company": row["company"],
        "expires_at": row["expires_at"],
    }


@dataclasses.dataclass(frozen=True, slots=True)
class Accepted:
    created: NewSession
    candidate_token: str

    def __repr__(self) -> str:
        return f"<Accepted {self.created.session.id}>"


async def accept_invite(
    engine: AsyncEngine,
    signals: SignalPublisher,
    actor: Actor,
    *,
    token: str,
    now: dt.datetime | None = None,
) -> Accepted:
    now = now or dt.datetime.now(dt.UTC)
    async with engine.begin() as conn:
        row = await store.find_valid(conn, token, now, lock=True)
        if row is None:
            raise invite_not_found()
        terms = SessionTerms(
            candidate_email=row["candidate_email"],
            deadline=now + dt.timedelta(minutes=row["session_minutes"]),
            max_requests=row["max_requests"],
            max_output_tokens=row["max_output_tokens"],
            allowed_models=row["allowed_models"],
            allowed_betas=row["allowed_betas"],
            allowed_server_tools=row["allowed_server_tools"],
        )
        # No bootstrap token: the candidate must hold nothing that can attach a proxy.
        created = await issue_session(
            conn, actor, tenant_id=row["tenant_id"], terms=terms, now=now, with_bootstrap=False
        )
        accepted = await store.mark_accepted(
            conn, row["id"], session_id=created.session.id, now=now
        )
        if not accepted:  # accepted concurrently: this transaction rolls back
            raise invite_not_found()
        assert created.session.candidate_id is not None
        candidate_token = await candidate_service.issue_token(conn, created.session.candidate_id)
        await audit.record(
            conn,
            actor,
            AuditAction.INVITE_ACCEPT,
            tenant_id=row["tenant_id"],
            target_type="invite",
            target_id=row["id"],
            session_id=created.session.id,
            candidate_id=created.session.candidate_id,
            now=now,
        )
    await signals.announce(created.session.id, created.session.state, None)
    return Accepted(created, candidate_token)


async def list_invites(engine: AsyncEngine, tenant_id: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        return [_public(row) for row in await store.list_invites(conn, tenant_id)]
