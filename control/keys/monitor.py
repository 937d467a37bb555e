"""Key health in the background: scheduled checks, refusals seen in live traffic, owners told.

`KeyMonitor.check_due` re-checks keys whose check is due: unverified keys with backoff,
valid keys daily. Each check unwraps the key's data key here and seals it to a short-lived
check process, which opens the key, makes one `models.list` call and exits
(control/keys/validation.py): the key is never in this process. The unwrap is audited like
a proxy's. Replicas share the work safely:
a check is claimed by moving the key's next check to the end of a lease in one UPDATE.

`KeyMonitor.on_records` reads the proxies' usage records as they are ingested: a call
that Anthropic answered 401 `authentication_error` marks the session's key invalid at
once; a 403 `permission_error` (which can concern one model only) makes its key due for
a check, which decides. Of many such records, one changes the status, is audited and
emails the tenant's owners; the candidate's client got Anthropic's error unchanged.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control.audit import store as audit
from control.audit.actions import ActorType, AuditAction
from control.audit.store import Actor
from control.email.sender import Email, EmailError, EmailSender
from control.keys import store
from control.keys.health import (
    DEFAULT_SCHEDULE,
    KeyStatus,
    Schedule,
    after_check,
    refusal_is_conclusive,
    reported_refusal,
)
from control.keys.store import KeyRecord
from control.keys.validation import KeyChecker
from control.members import store as member_store
from control.web.errors import ApiError, not_found
from core.crypto.envelope import KeyContext, UnwrapError, WrappedKey, unwrap_data_key
from core.crypto.provider import KekError, KekProvider
from core.usage import UsageRecord

log = structlog.get_logger(__name__)
SYSTEM = Actor(ActorType.SYSTEM, "key-monitor")


class KeyUnavailable(Exception):
    """The key-encryption key could not unwrap the key for a check."""


class KeyMonitor:
    def __init__(
        self,
        engine: AsyncEngine,
        kek: KekProvider,
        checker: KeyChecker,
        sender: EmailSender,
        *,
        schedule: Schedule = DEFAULT_SCHEDULE,
        batch: int = 20,
        interval_s: float = 10.0,
    ) -> None:
        self._engine = engine
        self._kek = kek
        self._checker = checker
        self._sender = sender
        self._schedule = schedule
        self._batch = batch
        self._interval_s = interval_s

    async def run(self) -> None:
        """Check due keys every `interval_s` until cancelled; outages are waited out."""
        while True:
            try:
                await self.check_due()
            except (SQLAlchemyError, OSError) as exc:
                log.warning("key_checks_retrying", error=type(exc).__name__)
            except Exception:
                # A background loop must outlive a bug in one pass; the next pass retries.
                log.exception("key_checks_failed")
            await asyncio.sleep(self._interval_s)

    async def check_due(self, now: dt.datetime | None = None) -> int:
        """Check every key due by `now` that no other worker has claimed; return how many
        this worker checked."""
        now = now or dt.datetime.now(dt.UTC)
        async with self._engine.connect() as conn:
            due = await store.due_for_check(conn, now, self._batch)
        checked = 0
        for key in due:
            async with self._engine.begin() as conn:
                attempts = await store.claim_check(
                    conn, key.id, due_by=now, lease_until=now + self._schedule.lease
                )
            if attempts is None:
                continue
            try:
                await self._check(key, attempts, SYSTEM, now)
            except KeyUnavailable:
                continue  # claimed until the lease ends: retried then
            checked += 1
        return checked

    async def check_now(
        self, actor: Actor, *, tenant_id: str, key_id: str, now: dt.datetime | None = None
    ) -> KeyRecord:
        """A check a member asked for: the only way back from `invalid` short of a new
        upload, for a key Anthropic refused by mistake or that was re-enabled."""
        now = now or dt.datetime.now(dt.UTC)
        async with self._engine.connect() as conn:
            key = await store.get_key(conn, tenant_id, key_id)
        if key is None:
            raise not_found("key")
        if key.status is KeyStatus.REVOKED:
            raise ApiError(409, "conflict_error", f"key …{key.last_four} is revoked")
        # An invalid key is checked afresh, not as a retry of its last failure.
        try:
            return await self._check(key, 0, actor, now)
        except KeyUnavailable:
            raise ApiError(503, "api_error", "the key could not be unwrapped; try later") from None

    async def _check(
        self, key: KeyRecord, attempts: int, actor: Actor, now: dt.datetime
    ) -> KeyRecord:
        unwrapped = await self._unwrap(key, actor, now)
        if unwrapped is None:  # revoked meanwhile
            return key
        wrapped, context, data_key = unwrapped
        try:
            # The key itself is opened only in the check's own short-lived process.
            result = await self._checker.check(wrapped, context, data_key)
        finally:
            data_key[:] = bytes(len(data_key))
        health = after_check(
            key.status, attempts, result, now, self._schedule, reason=key.status_reason
        )
        async with self._engine.begin() as conn:
            updated = await store.save_health(conn, key.id, health, now=now)
            if updated is not None and updated.status is not key.status:
                await _audit_status(conn, actor, key, updated, detail=result.reason, now=now)
        if updated is None:
            return key
        log.info("key_checked", key_id=key.id, verdict=result.verdict.value)
        if updated.status is KeyStatus.INVALID and key.status is not KeyStatus.INVALID:
            await self._tell_owners(updated)
        return updated

    async def _unwrap(
        self, key: KeyRecord, actor: Actor, now: dt.datetime
    ) -> tuple[WrappedKey, KeyContext, bytearray] | None:
        """The key's blob and its data key (never the key), audited as an unwrap."""
        async with self._engine.begin() as conn:
            wrapped = await store.get_wrapped(conn, key.tenant_id, key.id)
            if wrapped is None:
                return None
            await audit.record(
                conn,
                actor,
                AuditAction.KEY_UNWRAP,
                tenant_id=key.tenant_id,
                target_type="api_key",
                target_id=key.id,
                details={"purpose": "health_check", "kek_id": wrapped.kek_id},
                now=now,
            )
        context = KeyContext(tenant_id=key.tenant_id, key_id=key.id, version=wrapped.version)
        try:
            return wrapped, context, await unwrap_data_key(self._kek, wrapped, context)
        except (UnwrapError, KekError) as exc:
            log.error("key_check_unwrap_failed", key_id=key.id, error=type(exc).__name__)
            raise KeyUnavailable(key.id) from None

    async def on_records(self, records: Sequence[UsageRecord]) -> None:
        """Act on freshly ingested usage records: audit any answer that reflected the key,
        and act on refusals of a session's key."""
        await self._audit_reflections([r for r in records if r.key_reflected])
        refusals = {
            r.session_id: r.error_type
            for r in records
            if r.error_type and reported_refusal(r.http_status, r.error_type)
        }
        if not refusals:
            return
        now = dt.datetime.now(dt.UTC)
        invalidated: list[KeyRecord] = []
        async with self._engine.begin() as conn:
            keys = await store.keys_of_sessions(conn, set(refusals))
            seen: set[str] = set()
            for session_id, key in keys.items():
                error_type = refusals[session_id]
                if key.id in seen or key.status in (KeyStatus.INVALID, KeyStatus.REVOKED):
                    continue
                seen.add(key.id)
                if not refusal_is_conclusive(error_type):
                    await store.request_check(conn, key.id, now=now)
                    continue
                updated = await store.mark_invalid(conn, key.id, error_type, now=now)
                if updated is not None:
                    await _audit_status(
                        conn,
                        SYSTEM,
                        key,
                        updated,
                        detail=error_type,
                        now=now,
                        session_id=session_id,
                    )
                    invalidated.append(updated)
        for key in invalidated:
            log.warning("key_refused_in_use", key_id=key.id, reason=key.status_reason)
            await self._tell_owners(key)

    async def _audit_reflections(self, records: Sequence[UsageRecord]) -> None:
        """An upstream sent the key back and the proxy overwrote it: the customer's audit
        log says so, once per call, naming the key, the session and the upstream's request."""
        if not records:
            return
        now = dt.datetime.now(dt.UTC)
        async with self._engine.begin() as conn:
            keys = await store.keys_of_sessions(conn, {r.session_id for r in records})
            for record in records:
                key = keys.get(record.session_id)
                if key is None:
                    continue
                await audit.record(
                    conn,
                    SYSTEM,
                    AuditAction.KEY_REFLECTED,
                    tenant_id=key.tenant_id,
                    target_type="api_key",
                    target_id=key.id,
                    session_id=record.session_id,
                    details={
                        "last_four": key.last_four,
                        "record_id": record.record_id,
                        "upstream_request_id": record.upstream_request_id,
                        "endpoint": record.endpoint,
                    },
                    now=now,
                )
        log.error("key_reflected_by_upstream", count=len(records))

    async def _tell_owners(self, key: KeyRecord) -> None:
        async with self._engine.connect() as conn:
            team = await member_store.list_members(conn, key.tenant_id)
        owners = [m.email for m in team if m.role == "owner" and m.revoked_at is None]
        for owner in owners:
            try:
                await self._sender.send(refusal_email(owner, key))
            except EmailError:
                log.warning("key_refusal_email_failed", key_id=key.id)


def refusal_email(to: str, key: KeyRecord) -> Email:
    name = f" ({key.name})" if key.name else ""
    return Email(
        to=to,
        tenant_id=key.tenant_id,
        subject=f"Your Anthropic key …{key.last_four} was refused by Anthropic",
        body=(
            f"Anthropic refused your API key …{key.last_four}{name} "
            f"({key.status_reason or 'refused'}).\n\n"
            "New assessment sessions on this key are refused until you act. Candidates in "
            "sessions already using it will see their Claude calls fail.\n\n"
            "To fix it: upload a working key (POST /v1/keys with make_default=true), then "
            "revoke this one. If the key works again, ask for a new check with "
            "POST /v1/keys/{id}/check.\n"
        ).replace("{id}", key.id),
    )


async def _audit_status(
    conn: AsyncConnection,
    actor: Actor,
    before: KeyRecord,
    after: KeyRecord,
    *,
    detail: str,
    now: dt.datetime,
    session_id: str | None = None,
) -> None:
    await audit.record(
        conn,
        actor,
        AuditAction.KEY_STATUS,
        tenant_id=after.tenant_id,
        target_type="api_key",
        target_id=after.id,
        session_id=session_id,
        details={
            "from": before.status.value,
            "to": after.status.value,
            "reason": detail,
            "last_four": after.last_four,
        },
        now=now,
    )
