"""Queries on candidates, their deletion requests, and what an export gathers about them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from control.db.due import Due
from control.db.schema import (
    candidates,
    deletion_requests,
    invites,
    members,
    sessions,
    tenants,
    usage_records,
)
from core.tokens import hash_token


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


async def get_or_create(conn: AsyncConnection, email: str, *, now: dt.datetime) -> str:
    """The id of the candidate with this (normalised) email, created if new."""
    existing = (
        await conn.execute(select(candidates.c.id).where(candidates.c.email == email))
    ).first()
    if existing is not None:
        await conn.execute(
            update(candidates).where(candidates.c.id == existing.id).values(last_active_at=now)
        )
        return str(existing.id)
    candidate_id = str(uuid.uuid4())
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(candidates).values(
                    id=candidate_id, email=email, created_at=now, last_active_at=now
                )
            )
    except IntegrityError:
        # Created concurrently by another request: use that row.
        row = (await conn.execute(select(candidates.c.id).where(candidates.c.email == email))).one()
        return str(row.id)
    return candidate_id


async def touch_by_email(conn: AsyncConnection, email: str, now: dt.datetime) -> None:
    """Restart a known candidate's inactivity clock (control/retention), if there is one."""
    await conn.execute(
        update(candidates)
        .where(candidates.c.email == email)
        .values(last_active_at=now, deletion_notice_at=None)
    )


async def set_token(conn: AsyncConnection, candidate_id: str, token: str) -> None:
    """Store the hash of the candidate's new token; the previous one stops working."""
    await conn.execute(
        update(candidates)
        .where(candidates.c.id == candidate_id)
        .values(token_hash=hash_token(token))
    )


async def touch_by_token(conn: AsyncConnection, token: str, now: dt.datetime) -> Candidate | None:
    """The candidate this token belongs to, marked active now (a pending pre-deletion
    notice is cancelled)."""
    row = (
        await conn.execute(
            update(candidates)
            .where(candidates.c.token_hash == hash_token(token))
            .values(last_active_at=now, deletion_notice_at=None)
            .returning(*candidates.c)
        )
    ).first()
    return _candidate(row) if row else None


async def open_deletion_request(conn: AsyncConnection, candidate_id: str) -> dict[str, Any] | None:
    row = (
        await conn.execute(
            select(deletion_requests).where(
                deletion_requests.c.candidate_id == candidate_id,
                deletion_requests.c.completed_at.is_(None),
            )
        )
    ).first()
    return dict(row._mapping) if row else None


async def insert_deletion_request(
    conn: AsyncConnection,
    *,
    request_id: str,
    candidate_id: str,
    now: dt.datetime,
    due_at: dt.datetime,
) -> dict[str, Any]:
    values = {
        "id": request_id,
        "candidate_id": candidate_id,
        "candidate_id_text": candidate_id,
        "requested_at": now,
        "due_at": due_at,
    }
    await conn.execute(insert(deletion_requests).values(**values))
    row = (
        await conn.execute(select(deletion_requests).where(deletion_requests.c.id == request_id))
    ).one()
    return dict(row._mapping)


async def deletion_requests_of(conn: AsyncConnection, candidate_id: str) -> list[dict[str, Any]]:
    rows = await conn.execute(
        select(deletion_requests)
        .where(deletion_requests.c.candidate_id == candidate_id)
        .order_by(deletion_requests.c.requested_at)
    )
    return [dict(row._mapping) for row in rows]


async def sessions_of(conn: AsyncConnection, candidate_id: str) -> list[dict[str, Any]]:
    """The candidate's sessions with the company that issued each, oldest first."""
    rows = await conn.execute(
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
        .where(sessions.c.candidate_id == candidate_id)
        .order_by(sessions.c.created_at)
    )
    return [dict(row._mapping) for row in rows]


async def usage_of_sessions(conn: AsyncConnection, session_ids: list[str]) -> list[dict[str, Any]]:
    rows = await conn.execute(
        select(usage_records)
        .where(usage_records.c.session_id.in_(session_ids))
        .order_by(usage_records.c.started_at, usage_records.c.record_id)
    )
    return [dict(row._mapping) for row in rows]


async def invites_to(conn: AsyncConnection, email: str) -> list[dict[str, Any]]:
    rows = await conn.execute(
        select(
            invites.c.id,
            invites.c.tenant_id,
            invites.c.assessment_name,
            invites.c.created_at,
            invites.c.expires_at,
            invites.c.accepted_at,
            invites.c.session_id,
        )
        .where(invites.c.candidate_email == email)
        .order_by(invites.c.created_at)
    )
    return [dict(row._mapping) for row in rows]


async def roles_of_members(conn: AsyncConnection, member_ids: set[str]) -> dict[str, str]:
    """The role of each member id (for an export that names staff by role only)."""
    if not member_ids:
        return {}
    rows = await conn.execute(
        select(members.c.id, members.c.role).where(members.c.id.in_(member_ids))
    )
    return {row.id: row.role for row in rows}


# --- retention (control/retention/rules.py) ---------------------------------------------


def open_deletion_requests() -> Due:
    return Due(select(deletion_requests.c.id).where(deletion_requests.c.completed_at.is_(None)))


async def complete_deletion_request(
    conn: AsyncConnection, request_id: str, *, now: dt.datetime
) -> tuple[bool, str | None]:
    """Claim an open request (of two workers, one sees this apply): whether this call
    claimed it, and its candidate's id (None if the candidate is already gone)."""
    row = (
        await conn.execute(
            update(deletion_requests)
            .where(deletion_requests.c.id == request_id, deletion_requests.c.completed_at.is_(None))
            .values(completed_at=now)
            .returning(deletion_requests.c.candidate_id)
        )
    ).first()
    return (False, None) if row is None else (True, row.candidate_id)


def due_after_notice(noticed_before: dt.datetime) -> Due:
    """Candidates whose pre-deletion notice is this old. Signing in clears the notice, so
    they have not signed in since it was sent."""
    return Due(select(candidates.c.id).where(candidates.c.deletion_notice_at <= noticed_before))


def _notice_due(inactive_before: dt.datetime) -> ColumnElement[bool]:
    last_seen = func.coalesce(candidates.c.last_active_at, candidates.c.created_at)
    asked_to_go = (
        select(deletion_requests.c.id)
        .where(
            deletion_requests.c.candidate_id == candidates.c.id,
            deletion_requests.c.completed_at.is_(None),
        )
        .exists()
    )
    # Nobody who asked to be deleted is told they will be.
    return (last_seen <= inactive_before) & candidates.c.deletion_notice_at.is_(None) & ~asked_to_go


def due_notice(inactive_before: dt.datetime) -> Due:
    return Due(select(candidates.c.id).where(_notice_due(inactive_before)))


async def mark_noticed(
    conn: AsyncConnection, candidate_id: str, *, inactive_before: dt.datetime, now: dt.datetime
) -> str | None:
    """Mark the notice sent if it is still due; the candidate's email, else None (another
    worker sent it, or the candidate came back)."""
    row = (
        await conn.execute(
            update(candidates)
            .where(candidates.c.id == candidate_id, _notice_due(inactive_before))
            .values(deletion_notice_at=now)
            .returning(candidates.c.email)
        )
    ).first()
    return None if row is None else str(row.email)


async def still_noticed(conn: AsyncConnection, candidate_id: str, at: dt.datetime) -> bool:
    row = await conn.execute(
        select(candidates.c.id).where(
            candidates.c.id == candidate_id, candidates.c.deletion_notice_at == at
        )
    )
    return row.first() is not None


async def clear_notice(conn: AsyncConnection, candidate_id: str, at: dt.datetime) -> None:
    """Undo the notice mark made at `at` (the email was not sent)."""
    await conn.execute(
        update(candidates)
        .where(candidates.c.id == candidate_id, candidates.c.deletion_notice_at == at)
        .values(deletion_notice_at=None)
    )


async def email_of(conn: AsyncConnection, candidate_id: str) -> str | None:
    row = (
        await conn.execute(select(candidates.c.email).where(candidates.c.id == candidate_id))
    ).first()
    return None if row is None else str(row.email)


async def delete_candidate(
    conn: AsyncConnection, candidate_id: str, *, noticed_before: dt.datetime | None = None
) -> bool:
    """Delete the candidate row (their erasure key goes with it; sessions, audit rows and
    deletion requests keep the id as text, ON DELETE SET NULL). With `noticed_before`,
    only if their notice is still that old."""
    condition = candidates.c.id == candidate_id
    if noticed_before is not None:
        condition = condition & (candidates.c.deletion_notice_at <= noticed_before)
    deleted = await conn.execute(delete(candidates).where(condition))
    return deleted.rowcount == 1
