"""Queries on sessions. Token hashes stay here and in the attach grant."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from control.db.due import Due
from control.db.schema import candidates, proxy_credentials, sessions
from control.sessions.lifecycle import SessionState
from core.signals import LIVE_STATES

_LIVE = sorted(LIVE_STATES)


@dataclasses.dataclass(frozen=True, slots=True)
class SessionRecord:
    id: str
    tenant_id: str
    candidate_id: str | None
    api_key_id: str | None
    state: SessionState
    deadline_at: dt.datetime
    max_requests: int | None
    max_output_tokens: int | None
    allowed_models: list[str] | None
    allowed_betas: list[str] | None
    created_at: dt.datetime
    updated_at: dt.datetime
    ended_at: dt.datetime | None
    token_hash: str | None = dataclasses.field(repr=False, default=None)
    grader_token_hash: str | None = dataclasses.field(repr=False, default=None)
    bootstrap_token_hash: str | None = dataclasses.field(repr=False, default=None)
    bootstrap_used_at: dt.datetime | None = None
    proxy_epoch: int = 0
    soft_deleted_at: dt.datetime | None = None
    allowed_server_tools: list[str] | None = None  # None: every server-side tool


def _record(row: Any) -> SessionRecord:
    data = dict(row._mapping)
    data.pop("created_by", None)
    data["state"] = SessionState(data["state"])
    return SessionRecord(**data)


async def insert_session(conn: AsyncConnection, **values: Any) -> SessionRecord:
    row = (await conn.execute(insert(sessions).values(**values).returning(*sessions.c))).one()
    return _record(row)


async def get_session(
    conn: AsyncConnection,
    session_id: str,
    *,
    tenant_id: str | None = None,
    for_update: bool = False,
) -> SessionRecord | None:
    """The session with this id (restricted to `tenant_id` when given); None if absent or
    soft-deleted by retention (control/retention)."""
    query = select(sessions).where(
        sessions.c.id == session_id, sessions.c.soft_deleted_at.is_(None)
    )
    if tenant_id is not None:
        query = query.where(sessions.c.tenant_id == tenant_id)
    if for_update:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return _record(row) if row else None


@dataclasses.dataclass(frozen=True, slots=True)
class SessionFilter:
    states: tuple[str, ...] = ()
    candidate_email: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


async def list_sessions(
    conn: AsyncConnection, tenant_id: str, found: SessionFilter, *, limit: int
) -> list[tuple[SessionRecord, str | None]]:
    """The tenant's visible sessions, newest first, each with its candidate's email (None
    once the candidate is erased)."""
    query = (
        select(sessions, candidates.c.email.label("candidate_email"))
        .outerjoin(candidates, candidates.c.id == sessions.c.candidate_id)
        .where(sessions.c.tenant_id == tenant_id, sessions.c.soft_deleted_at.is_(None))
    )
    if found.states:
        query = query.where(sessions.c.state.in_(found.states))
    if found.candidate_email:
        query = query.where(candidates.c.email == found.candidate_email)
    if found.since is not None:
        query = query.where(sessions.c.created_at >= found.since)
    if found.until is not None:
        query = query.where(sessions.c.created_at < found.until)
    rows = await conn.execute(
        query.order_by(sessions.c.created_at.desc(), sessions.c.id.desc()).limit(limit)
    )
    out = []
    for row in rows:
        data = dict(row._mapping)
        email = data.pop("candidate_email")
        data.pop("created_by", None)
        data["state"] = SessionState(data["state"])
        out.append((SessionRecord(**data), email))
    return out


async def update_session(
    conn: AsyncConnection, session_id: str, *, now: dt.datetime, **values: Any
) -> SessionRecord:
    row = (
        await conn.execute(
            update(sessions)
            .where(sessions.c.id == session_id)
            .values(updated_at=now, **values)
            .returning(*sessions.c)
        )
    ).one()
    return _record(row)


async def set_state(
    conn: AsyncConnection, session_id: str, state: SessionState, *, now: dt.datetime, **extra: Any
) -> SessionRecord:
    """Move a session to `state`; leaving the live states stamps `ended_at`."""
    if state.value not in LIVE_STATES:
        extra.setdefault("ended_at", now)
    return await update_session(conn, session_id, now=now, state=state.value, **extra)


async def live_sessions_of_key(conn: AsyncConnection, key_id: str) -> list[SessionRecord]:
    rows = await conn.execute(
        select(sessions).where(sessions.c.api_key_id == key_id, sessions.c.state.in_(_LIVE))
    )
    return [_record(row) for row in rows]


@dataclasses.dataclass(frozen=True, slots=True)
class ProxyCredential:
    token_hash: str = dataclasses.field(repr=False)
    session_id: str
    epoch: int
    issued_at: dt.datetime
    fenced_at: dt.datetime | None


async def issue_proxy_credential(
    conn: AsyncConnection, session_id: str, token_hash: str, epoch: int, *, now: dt.datetime
) -> None:
    """Record a new attach's credential and fence every earlier one of the session."""
    await conn.execute(
        update(proxy_credentials)
        .where(
            proxy_credentials.c.session_id == session_id, proxy_credentials.c.fenced_at.is_(None)
        )
        .values(fenced_at=now)
    )
    await conn.execute(
        insert(proxy_credentials).values(
            token_hash=token_hash, session_id=session_id, epoch=epoch, issued_at=now
        )
    )


async def get_attached_proxy(
    conn: AsyncConnection, session_id: str, token_hash: str
) -> tuple[SessionRecord, ProxyCredential] | None:
    """The session and the proxy credential with this hash, in one query (a proxy posts
    often); None if either is missing or the session is soft-deleted."""
    credential = proxy_credentials.alias("credential")
    row = (
        await conn.execute(
            select(
                sessions,
                credential.c.token_hash.label("credential_hash"),
                credential.c.epoch.label("credential_epoch"),
                credential.c.issued_at.label("credential_issued_at"),
                credential.c.fenced_at.label("credential_fenced_at"),
            )
            .join(credential, credential.c.session_id == sessions.c.id)
            .where(
                sessions.c.id == session_id,
                sessions.c.soft_deleted_at.is_(None),
                credential.c.token_hash == token_hash,
            )
        )
    ).first()
    if row is None:
        return None
    data = dict(row._mapping)
    proxy = ProxyCredential(
        data.pop("credential_hash"),
        session_id,
        data.pop("credential_epoch"),
        data.pop("credential_issued_at"),
        data.pop("credential_fenced_at"),
    )
    data.pop("created_by", None)
    data["state"] = SessionState(data["state"])
    return SessionRecord(**data), proxy


async def count_by_state(conn: AsyncConnection) -> dict[str, int]:
    """Sessions per state, every tenant (for the metrics gauge)."""
    rows = await conn.execute(select(sessions.c.state, func.count()).group_by(sessions.c.state))
    return {str(state): int(count) for state, count in rows.all()}


# --- retention (control/retention/rules.py) ---------------------------------------------


def _completed_at() -> ColumnElement[dt.datetime]:
    # A session is over when it ends, and at its deadline at the latest (one nobody ended
    # or expired explicitly must not be kept forever).
    return func.coalesce(sessions.c.ended_at, sessions.c.deadline_at)


def _soft_delete_due(completed_before: dt.datetime) -> ColumnElement[bool]:
    return (_completed_at() <= completed_before) & sessions.c.soft_deleted_at.is_(None)


def due_soft_delete(completed_before: dt.datetime) -> Due:
    return Due(select(sessions.c.id).where(_soft_delete_due(completed_before)))


async def soft_delete(
    conn: AsyncConnection, ids: list[str], *, completed_before: dt.datetime, now: dt.datetime
) -> list[str]:
    """Soft-delete those still due; the tenant id of each one changed."""
    rows = await conn.execute(
        update(sessions)
        .where(sessions.c.id.in_(ids), _soft_delete_due(completed_before))
        .values(soft_deleted_at=now)
        .returning(sessions.c.tenant_id)
    )
    return [row.tenant_id for row in rows]


def _hard_delete_due(completed_before: dt.datetime, *, soft_deleted: bool) -> ColumnElement[bool]:
    due = _completed_at() <= completed_before
    return due & sessions.c.soft_deleted_at.is_not(None) if soft_deleted else due


def due_hard_delete(completed_before: dt.datetime, *, soft_deleted: bool = True) -> Due:
    """Only what is already soft-deleted (unless `soft_deleted` is False: a dry run, which
    soft-deleted nothing, counts by age alone as the real run would act)."""
    return Due(
        select(sessions.c.id).where(_hard_delete_due(completed_before, soft_deleted=soft_deleted))
    )


async def hard_delete(
    conn: AsyncConnection, ids: list[str], *, completed_before: dt.datetime
) -> list[str]:
    """Delete those still due; the tenant id of each one deleted. Usage records go with
    their session (ON DELETE CASCADE); audit rows and invites keep the id as text and lose
    the link (ON DELETE SET NULL)."""
    rows = await conn.execute(
        delete(sessions)
        .where(sessions.c.id.in_(ids), _hard_delete_due(completed_before, soft_deleted=True))
        .returning(sessions.c.tenant_id)
    )
    return [row.tenant_id for row in rows]


async def tenants_of_candidate(conn: AsyncConnection, candidate_id: str) -> list[str]:
    rows = await conn.execute(
        select(sessions.c.tenant_id).where(sessions.c.candidate_id == candidate_id).distinct()
    )
    return sorted(row.tenant_id for row in rows)
