"""The retention worker: enforces control/retention/rules.py.

Each pass takes a batch of due ids from a domain store (a `Due`), then has the store
change them with a statement whose WHERE clause repeats the due condition, so the change
applies once whoever else is running: two workers on two replicas split the rows between
them and, together, do what one would have done. Every change is audited in its own
transaction with its count. Time is passed in, so tests (and `--now`) can jump years
ahead. Erasure and anonymisation are in control/retention/erasure.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control.audit import store as audit
from control.audit.actions import AuditAction
from control.audit.archival import archive_due
from control.audit.archive import ArchiveStore
from control.candidates import store as candidate_store
from control.db.due import Due
from control.db.engine import flush_deleted
from control.email import store as email_store
from control.email.sender import Email, EmailError, EmailSender
from control.invites import store as invite_store
from control.keys import store as key_store
from control.retention import rules
from control.retention.erasure import SYSTEM, anonymise_tenant, erase_candidate
from control.sessions import store as session_store
from control.tenants import store as tenant_store
from control.usage import store as usage_store

log = structlog.get_logger(__name__)


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
    def __init__(
        self,
        engine: AsyncEngine,
        sender: EmailSender,
        *,
        batch: int = 200,
        audit_archive: ArchiveStore | None = None,
        audit_retention_days: int = rules.AUDIT_TARGET.days,
    ) -> None:
        self._engine = engine
        self._sender = sender
        self._batch = batch
        self._audit_archive = audit_archive
        self._audit_retention_days = audit_retention_days

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
            self._delete_dead_letters,
            self._erase_unaccepted_invites,
            self._purge_outbox,
            self._archive_audit,
        ):
            await step(report)
        erased = (
            "invite_emails_erased",
            "outbox_delivered_deleted",
            "outbox_undelivered_deleted",
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
        due: Due,
        apply: Callable[[AsyncConnection, list[Any]], Awaitable[int]],
    ) -> None:
        """Take due ids in batches and apply the change to each batch in a transaction.
        A dry run only counts what is due."""
        if report.dry_run:
            async with self._engine.connect() as conn:
                report.counts[name] += await due.count(conn)
            return
        while True:
            async with self._engine.connect() as conn:
                ids = await due.take(conn, self._batch)
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

        async def apply(conn: AsyncConnection, ids: list[str]) -> int:
            tenant_ids = await session_store.soft_delete(
                conn, ids, completed_before=cutoff, now=report.now
            )
            return await _audit_counts(
                conn, tenant_ids, AuditAction.RETENTION_SESSIONS_SOFT_DELETE, report.now
            )

        await self._batches(
            report, "sessions_soft_deleted", session_store.due_soft_delete(cutoff), apply
        )

    async def _hard_delete_sessions(self, report: Report) -> None:
        cutoff = report.now - rules.SESSION_HARD_DELETE
        # Only what is already soft-deleted: every session leaves the API before it leaves
        # the database, and a worker running beside another never deletes a session the
        # other is about to soft-delete (this run's soft pass got the rest).

        async def apply(conn: AsyncConnection, ids: list[str]) -> int:
            tenant_ids = await session_store.hard_delete(conn, ids, completed_before=cutoff)
            return await _audit_counts(
                conn, tenant_ids, AuditAction.RETENTION_SESSIONS_HARD_DELETE, report.now
            )

        due = session_store.due_hard_delete(cutoff, soft_deleted=not report.dry_run)
        await self._batches(report, "sessions_hard_deleted", due, apply)

    # --- candidates ----------------------------------------------------------------------

    async def _carry_out_deletion_requests(self, report: Report) -> None:
        async def apply(conn: AsyncConnection, ids: list[str]) -> int:
            done = 0
            for request_id in ids:
                claimed, candidate_id = await candidate_store.complete_deletion_request(
                    conn, request_id, now=report.now
                )
                if not claimed:
                    continue
                if candidate_id is not None:
                    await erase_candidate(
                        conn, candidate_id, reason="deletion_request", now=report.now
                    )
                done += 1
            return done

        await self._batches(
            report,
            "deletion_requests_completed",
            candidate_store.open_deletion_requests(),
            apply,
        )

    async def _delete_after_notice(self, report: Report) -> None:
        noticed_before = report.now - rules.CANDIDATE_NOTICE

        async def apply(conn: AsyncConnection, ids: list[str]) -> int:
            erased = 0
            for candidate_id in ids:
                if await erase_candidate(
                    conn,
                    candidate_id,
                    reason="inactive",
                    now=report.now,
                    noticed_before=noticed_before,
                ):
                    erased += 1
            return erased

        await self._batches(
            report,
            "candidates_deleted_inactive",
            candidate_store.due_after_notice(noticed_before),
            apply,
        )

    async def _send_notices(self, report: Report) -> None:
        inactive_before = report.now - rules.CANDIDATE_INACTIVITY
        to_notify: list[tuple[str, str]] = []

        async def apply(conn: AsyncConnection, ids: list[str]) -> int:
            sent = 0
            for candidate_id in ids:
                email = await candidate_store.mark_noticed(
                    conn, candidate_id, inactive_before=inactive_before, now=report.now
                )
                if email is None:
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
                to_notify.append((candidate_id, email))
                sent += 1
            return sent

        await self._batches(
            report, "candidate_notices_sent", candidate_store.due_notice(inactive_before), apply
        )
        for candidate_id, email in to_notify:
            await self._notify(candidate_id, email, report.now)

    async def _notify(self, candidate_id: str, email: str, noticed_at: dt.datetime) -> None:
        async with self._engine.connect() as conn:
            if not await candidate_store.still_noticed(conn, candidate_id, noticed_at):
                return  # erased meanwhile (by another worker): no email to a deleted person
        try:
            await self._sender.send(
                notice_email(email, noticed_at + rules.CANDIDATE_NOTICE, at=noticed_at)
            )
        except EmailError:
            # Not sent: clear the mark so the next run tries again.
            log.warning("retention_notice_unsent", candidate_id=candidate_id)
            async with self._engine.begin() as conn:
                await candidate_store.clear_notice(conn, candidate_id, noticed_at)

    # --- tenants -------------------------------------------------------------------------

    async def _destroy_closed_tenants_keys(self, report: Report) -> None:
        async def apply(conn: AsyncConnection, ids: list[str]) -> int:
            revoked = await key_store.revoke_closed_tenant_keys(
                conn, ids, revoked_by="retention", now=report.now
            )
            for key in revoked:
                await audit.record(
                    conn,
                    SYSTEM,
                    AuditAction.KEY_REVOKE,
                    tenant_id=key.tenant_id,
                    target_type="api_key",
                    target_id=key.id,
                    details={"last_four": key.last_four, "reason": "tenant closed"},
                    now=report.now,
                )
            return len(revoked)

        await self._batches(
            report, "closed_tenant_keys_destroyed", key_store.due_closed_tenant_keys(), apply
        )

    async def _anonymise_tenants(self, report: Report) -> None:
        closed_before = report.now - rules.TENANT_GRACE

        async def apply(conn: AsyncConnection, ids: list[str]) -> int:
            done = 0
            for tenant_id in ids:
                if await anonymise_tenant(
                    conn, tenant_id, now=report.now, closed_before=closed_before
                ):
                    done += 1
            return done

        await self._batches(
            report, "tenants_anonymised", tenant_store.due_anonymise(closed_before), apply
        )

    # --- usage dead letters --------------------------------------------------------------

    async def _delete_dead_letters(self, report: Report) -> None:
        created_before = report.now - rules.USAGE_DEAD_LETTERS

        async def apply(conn: AsyncConnection, ids: list[int]) -> int:
            return await usage_store.delete_dead_letters(conn, ids, created_before=created_before)

        await self._batches(
            report,
            "usage_dead_letters_deleted",
            usage_store.due_dead_letters(created_before),
            apply,
        )

    # --- invites and the outbox ------------------------------------------------------------

    async def _erase_unaccepted_invites(self, report: Report) -> None:
        expired_before = report.now - rules.INVITE_EMAIL

        async def apply(conn: AsyncConnection, ids: list[str]) -> int:
            return await invite_store.erase_unaccepted(
                conn, ids, expired_before=expired_before, now=report.now
            )

        await self._batches(
            report, "invite_emails_erased", invite_store.due_unaccepted(expired_before), apply
        )

    async def _purge_outbox(self, report: Report) -> None:
        created_before = report.now - rules.OUTBOX_UNDELIVERED

        async def undelivered(conn: AsyncConnection, ids: list[int]) -> int:
            return await email_store.delete_undelivered(conn, ids, created_before=created_before)

        await self._batches(
            report,
            "outbox_delivered_deleted",
            email_store.due_delivered(),
            email_store.delete_delivered,
        )
        await self._batches(
            report,
            "outbox_undelivered_deleted",
            email_store.due_undelivered(created_before),
            undelivered,
        )

    # --- the audit log -----------------------------------------------------------------------

    async def _archive_audit(self, report: Report) -> None:
        """Archive and remove audit rows past the retention target (control/audit/archival.py).
        A dry run does not count them: the archive is the only place they would go."""
        if self._audit_archive is None or report.dry_run:
            return
        archived = await archive_due(
            self._engine,
            self._audit_archive,
            retention_days=self._audit_retention_days,
            now=report.now,
        )
        report.counts["audit_rows_archived"] += sum(item.rows for item in archived)


async def _audit_counts(
    conn: AsyncConnection, tenant_ids: list[str], action: AuditAction, now: dt.datetime
) -> int:
    """One audit row per tenant with how many of its sessions this batch changed."""
    per_tenant = Counter(tenant_ids)
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


def notice_email(to: str, delete_after: dt.datetime, *, at: dt.datetime | None = None) -> Email:
    return Email(
        to=to,
        at=at,
        subject="Your Metrux candidate account will be deleted",
        body=(
            "You have not used your Metrux candidate account for two years, and no company "
            "has invited you to an assessment in that time.\n\n"
            f"Unless you sign in before {delete_after.date().isoformat()}, we will delete "
            "your account and the data linked to it.\n\n"
            "To keep it, sign in once with your candidate token: GET /v1/auth/me.\n"
        ),
    )
