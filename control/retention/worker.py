"""The retention worker: enforces control/retention/rules.py.

Each pass selects a batch of due rows, then changes them with a statement whose WHERE
clause repeats the due condition, so the change applies once whoever else is running:
two workers on two replicas split the rows between them and, together, do what one would
have done. Every change is audited in its own transaction with its count. Time is passed
in, so tests (and `--now`) can jump years ahead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from control.audit import store as audit
from control.audit.actions import ActorType, AuditAction
from control.audit.store import Actor
from control.db.engine import flush_deleted
from control.db.schema import (
    api_keys,
    candidates,
    deletion_requests,
    email_outbox,
    invites,
    members,
    sessions,
    tenants,
)
from control.email.sender import Email, EmailError, EmailSender
from control.keys.health import KeyStatus
from control.retention import rules
from core.tokens import hash_token

log = structlog.get_logger(__name__)
SYSTEM = Actor(ActorType.SYSTEM, "retention")
ERASED_EMAIL = "erased@erased.invalid"
ANONYMISED_TENANT = "anonymised tenant"


@dataclasses.dataclass
class Report:
    dry_run: bool
    now: dt.datetime
    counts: Counter[str] = dataclasses.field(default_factory=Counter)

    def as_json(self) -> dict[str, Any]:
        return {
            "event": "retention_dry_run" if self.dry_run else "retention_run",
            "now": self.now.isoformat(),
            "counts": {name: self.counts[name] for name in sorted(self.counts)},
        }


class RetentionWorker:
    def __init__(self, engine: AsyncEngine, sender: EmailSender, *, batch: int = 200) -> None:
        self._engine = engine
        self._sender = sender
        self._batch = batch

    async def run_forever(self, interval_s: float = 3600.0) -> None:
        while True:
            try:
                report = await self.run()
                if any(report.counts.values()):
                    log.info("retention_done", **report.counts)
            except (SQLAlchemyError, OSError) as exc:
                log.warning("retention_retrying", error=type(exc).__name__)
            except Exception:
                log.exception("retention_failed")  # the next run retries
            await asyncio.sleep(interval_s)

    async def run(self, now: dt.datetime | None = None, *, dry_run: bool = False) -> Report:
        report = Report(dry_run, now or dt.datetime.now(dt.UTC))
        for step in (
            self._soft_delete_sessions,
            self._hard_delete_sessions,
            self._carry_out_deletion_requests,
            self._delete_after_notice,
            self._send_notices,
            self._destroy_closed_tenants_keys,
            self._anonymise_tenants,
        ):
            await step(report)
        erased = (
            "deletion_requests_completed",
            "candidates_deleted_inactive",
            "tenants_anonymised",
        )
        if not dry_run and any(report.counts[name] for name in erased):
            await flush_deleted(self._engine)
        return report

    # --- helpers -------------------------------------------------------------------------

    async def _batches(
        self,
        report: Report,
        name: str,
        due: Any,
        apply: Callable[[AsyncConnection, list[Any]], Awaitable[int]],
    ) -> None:
        """Select due ids in batches and apply the change to each batch in a transaction.
        A dry run only counts what is due."""
        if report.dry_run:
            async with self._engine.connect() as conn:
                count = await conn.execute(select(func.count()).select_from(due.subquery()))
                report.counts[name] += int(count.scalar_one())
            return
        while True:
            async with self._engine.connect() as conn:
                ids = [row[0] for row in await conn.execute(due.limit(self._batch))]
            if not ids:
                return
            async with self._engine.begin() as conn:
                changed = await apply(conn, ids)
            report.counts[name] += changed
            if changed == 0:
                # Everything selected was taken by another worker (or stopped being due):
                # stop rather than spin; whatever is left is due again at the next run.
                return

    # --- session data --------------------------------------------------------------------

    async def _soft_delete_sessions(self, report: Report) -> None:
        cutoff = report.now - rules.SESSION_SOFT_DELETE
        due_now = (_completed_at() <= cutoff) & sessions.c.soft_deleted_at.is_(None)

        async def apply(conn: AsyncConnection, ids: list[str]) -> int:
            rows = await conn.execute(
                update(sessions)
                .where(sessions.c.id.in_(ids), due_now)
                .values(soft_deleted_at=report.now)
                .returning(sessions.c.tenant_id)
            )
            return await _audit_counts(
                conn, rows, AuditAction.RETENTION_SESSIONS_SOFT_DELETE, report.now
            )

        await self._batches(
            report, "sessions_soft_deleted", select(sessions.c.id).where(due_now), apply
        )

    async def _hard_delete_sessions(self, report: Report) -> None:
        cutoff = report.now - rules.SESSION_HARD_DELETE
        # Only what is already soft-deleted: every session leaves the API before it leaves
        # the database, and a worker running beside another never deletes a session the
        # other is about to soft-delete (this run's soft pass got the rest). A dry run
        # soft-deleted nothing, so it counts by age alone, as the real run would act.
        due_now = _completed_at() <= cutoff
        if not report.dry_run:
            due_now = due_now & sessions.c.soft_deleted_at.is_not(None)

        async def apply(conn: AsyncConnection, ids: list[str]) -> int:
            # Usage records go with their session (ON DELETE CASCADE); audit rows and
            # invites keep the id as text and lose the link (ON DELETE SET NULL).
            rows = await conn.execute(
                delete(sessions)
                .where(sessions.c.id.in_(ids), due_now)
                .returning(sessions.c.tenant_id)
            )
            return await _audit_counts(
                conn, rows, AuditAction.RETENTION_SESSIONS_HARD_DELETE, report.now
            )

        await self._batches(
            report, "sessions_hard_deleted", select(sessions.c.id).where(due_now), apply
        )

    # --- candidates ----------------------------------------------------------------------

    async def _carry_out_deletion_requests(self, report: Report) -> None:
        open_request = deletion_requests.c.completed_at.is_(None)

        async def apply(conn: AsyncConnection, ids: list[str]) -> int:
            done = 0
            for request_id in ids:
                # Claim the request: of two workers, one sees its UPDATE apply.
                row = (
                    await conn.execute(
                        update(deletion_requests)
                        .where(deletion_requests.c.id == request_id, open_request)
                        .values(completed_at=report.now)
                        .returning(deletion_requests.c.candidate_id)
                    )
                ).first()
                if row is None:
                    continue
                if row.candidate_id is not None:
                    await erase_candidate(
                        conn, row.candidate_id, reason="deletion_request", now=report.now
                    )
                done += 1
            return done

        await self._batches(
            report,
            "deletion_requests_completed",
            select(deletion_requests.c.id).where(open_request),
            apply,
        )

    async def _delete_after_notice(self, report: Report) -> None:
        # Signing in clears deletion_notice_at, so a candidate still carrying a notice this
        # old has not signed in since it was sent.
        due_now = candidates.c.deletion_notice_at <= report.now - rules.CANDIDATE_NOTICE

        async def apply(conn: AsyncConnection, ids: list[str]) -> int:
            erased = 0
            for candidate_id in ids:
                if await erase_candidate(
                    conn, candidate_id, reason="inactive", now=report.now, still_due=due_now
                ):
                    erased += 1
            return erased

        await self._batches(
            report, "candidates_deleted_inactive", select(candidates.c.id).where(due_now), apply
        )

    async def _send_notices(self, report: Report) -> None:
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
        due_now = (
            (last_seen <= report.now - rules.CANDIDATE_INACTIVITY)
            & candidates.c.deletion_notice_at.is_(None)
            & ~asked_to_go
        )
        to_notify: list[tuple[str, str]] = []

        async def apply(conn: AsyncConnection, ids: list[str]) -> int:
            sent = 0
            for candidate_id in ids:
                row = (
                    await conn.execute(
                        update(candidates)
                        .where(candidates.c.id == candidate_id, due_now)
                        .values(deletion_notice_at=report.now)
                        .returning(candidates.c.email)
                    )
                ).first()
                if row is None:
                    continue  # another worker sent it, or the candidate came back
                await audit.record(
                    conn,
                    SYSTEM,
                    AuditAction.CANDIDATE_DELETION_NOTICE,
                    tenant_id=None,
                    target_type="candidate",
                    target_id=candidate_id,
                    candidate_id=candidate_id,
                    details={"delete_after": (report.now + rules.CANDIDATE_NOTICE).isoformat()},
                    now=report.now,
                )
                to_notify.append((candidate_id, row.email))
                sent += 1
            return sent

        await self._batches(
            report, "candidate_notices_sent", select(candidates.c.id).where(due_now), apply
        )
        for candidate_id, email in to_notify:
            if not await self._still_noticed(candidate_id, report.now):
                continue  # erased meanwhile (by another worker): no email to a deleted person
            try:
                await self._sender.send(notice_email(email, report.now + rules.CANDIDATE_NOTICE))
            except EmailError:
                # Not sent: clear the mark so the next run tries again.
                log.warning("retention_notice_unsent", candidate_id=candidate_id)
                async with self._engine.begin() as conn:
                    await conn.execute(
                        update(candidates)
                        .where(
                            candidates.c.id == candidate_id,
                            candidates.c.deletion_notice_at == report.now,
                        )
                        .values(deletion_notice_at=None)
                    )

    async def _still_noticed(self, candidate_id: str, at: dt.datetime) -> bool:
        async with self._engine.connect() as conn:
            row = await conn.execute(
                select(candidates.c.id).where(
                    candidates.c.id == candidate_id, candidates.c.deletion_notice_at == at
                )
            )
            return row.first() is not None

    # --- tenants -------------------------------------------------------------------------

    async def _destroy_closed_tenants_keys(self, report: Report) -> None:
        closed = select(tenants.c.id).where(tenants.c.closed_at.is_not(None))
        due_now = api_keys.c.tenant_id.in_(closed) & api_keys.c.revoked_at.is_(None)

        async def apply(conn: AsyncConnection, ids: list[str]) -> int:
            rows = await conn.execute(
                update(api_keys)
                .where(api_keys.c.id.in_(ids), due_now)
                .values(
                    revoked_at=report.now,
                    revoked_by="retention",
                    status=KeyStatus.REVOKED.value,
                    is_default=False,
                    next_check_at=None,
                    kek_id=None,
                    encrypted_data_key=None,
                    nonce=None,
                    ciphertext=None,
                )
                .returning(api_keys.c.tenant_id, api_keys.c.id, api_keys.c.last_four)
            )
            count = 0
            for row in rows:
                await audit.record(
                    conn,
                    SYSTEM,
                    AuditAction.KEY_REVOKE,
                    tenant_id=row.tenant_id,
                    target_type="api_key",
                    target_id=row.id,
                    details={"last_four": row.last_four, "reason": "tenant closed"},
                    now=report.now,
                )
                count += 1
            return count

        await self._batches(
            report, "closed_tenant_keys_destroyed", select(api_keys.c.id).where(due_now), apply
        )

    async def _anonymise_tenants(self, report: Report) -> None:
        due_now = (tenants.c.closed_at <= report.now - rules.TENANT_GRACE) & (
            tenants.c.anonymised_at.is_(None)
        )

        async def apply(conn: AsyncConnection, ids: list[str]) -> int:
            done = 0
            for tenant_id in ids:
                if await anonymise_tenant(conn, tenant_id, now=report.now, still_due=due_now):
                    done += 1
            return done

        await self._batches(
            report, "tenants_anonymised", select(tenants.c.id).where(due_now), apply
        )


def _completed_at() -> ColumnElement[dt.datetime]:
    # A session is over when it ends, and at its deadline at the latest (one nobody ended
    # or expired explicitly must not be kept forever).
    return func.coalesce(sessions.c.ended_at, sessions.c.deadline_at)


async def _audit_counts(
    conn: AsyncConnection, rows: Any, action: AuditAction, now: dt.datetime
) -> int:
    """One audit row per tenant with how many of its sessions this batch changed."""
    per_tenant = Counter(row.tenant_id for row in rows)
    for tenant_id, count in sorted(per_tenant.items()):
        await audit.record(
            conn,
            SYSTEM,
            action,
            tenant_id=tenant_id,
            target_type="session",
            details={"count": count},
            now=now,
        )
    return sum(per_tenant.values())


async def erase_candidate(
    conn: AsyncConnection,
    candidate_id: str,
    *,
    reason: str,
    now: dt.datetime,
    still_due: ColumnElement[bool] | None = None,
) -> bool:
    """Delete a candidate and every trace of their email; False if there was nothing to do
    (already erased, or `still_due` no longer holds, e.g. they signed in)."""
    row = (
        await conn.execute(select(candidates.c.email).where(candidates.c.id == candidate_id))
    ).first()
    if row is None:
        return False
    condition = candidates.c.id == candidate_id
    if still_due is not None:
        condition = condition & still_due
    tenant_ids = sorted(
        {
            r.tenant_id
            for r in await conn.execute(
                select(sessions.c.tenant_id).where(sessions.c.candidate_id == candidate_id)
            )
        }
    )
    # The candidate row goes first: if it is no longer due, nothing else changes. Its
    # erasure key goes with it, leaving the sealed IPs in audit rows unreadable; sessions,
    # audit rows and deletion requests keep the id as text (ON DELETE SET NULL).
    deleted = await conn.execute(delete(candidates).where(condition))
    if deleted.rowcount != 1:
        return False
    await conn.execute(
        update(invites)
        .where(invites.c.candidate_email == row.email)
        .values(candidate_email=ERASED_EMAIL)
    )
    await conn.execute(delete(email_outbox).where(email_outbox.c.to_email == row.email))
    for tenant_id in [*tenant_ids, None]:
        await audit.record(
            conn,
            SYSTEM,
            AuditAction.CANDIDATE_ERASE,
            tenant_id=tenant_id,
            target_type="candidate",
            target_id=candidate_id,
            details={"reason": reason},
            now=now,
        )
    return True


async def anonymise_tenant(
    conn: AsyncConnection,
    tenant_id: str,
    *,
    now: dt.datetime,
    still_due: ColumnElement[bool] | None = None,
) -> bool:
    condition = tenants.c.id == tenant_id
    if still_due is not None:
        condition = condition & still_due
    changed = await conn.execute(
        update(tenants).where(condition).values(name=ANONYMISED_TENANT, anonymised_at=now)
    )
    if changed.rowcount != 1:
        return False
    member_ids = [
        r.id
        for r in await conn.execute(select(members.c.id).where(members.c.tenant_id == tenant_id))
    ]
    for member_id in member_ids:
        await conn.execute(
            update(members)
            .where(members.c.id == member_id)
            .values(
                email=f"anonymised-{member_id}@anonymised.invalid",
                # A hash of a token nobody holds: the member can never sign in again.
                token_hash=hash_token(secrets.token_urlsafe(32)),
                revoked_at=func.coalesce(members.c.revoked_at, now),
            )
        )
    invited = await conn.execute(
        update(invites).where(invites.c.tenant_id == tenant_id).values(candidate_email=ERASED_EMAIL)
    )
    await conn.execute(delete(email_outbox).where(email_outbox.c.tenant_id == tenant_id))
    await audit.record(
        conn,
        SYSTEM,
        AuditAction.TENANT_ANONYMISE,
        tenant_id=tenant_id,
        target_type="tenant",
        target_id=tenant_id,
        details={"members": len(member_ids), "invites": invited.rowcount},
        now=now,
    )
    return True


def notice_email(to: str, delete_after: dt.datetime) -> Email:
    return Email(
        to=to,
        subject="Your Metrux candidate account will be deleted",
        body=(
            "You have not used your Metrux candidate account for two years, and no company "
            "has invited you to an assessment in that time.\n\n"
            f"Unless you sign in before {delete_after.date().isoformat()}, we will delete "
            "your account and the data linked to it.\n\n"
            "To keep it, sign in once with your candidate token: GET /v1/auth/me.\n"
        ),
    )
