"""Customer keys: upload (check, wrap), default, revoke. Each change is audited in its
transaction.

The plaintext key exists only inside `upload_key`: copied into a bytearray, checked with
Anthropic, wrapped, and the bytearray zeroed. (The request's own str copy is aiohttp's and
json's, and the SDK client holds it for the one check; SECURITY-CHECKS.md C15 discusses
recycling upload workers, left for the hardening issue.)
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control.audit import store as audit
from control.audit.actions import AuditAction
from control.audit.store import Actor
from control.keys import store
from control.keys.health import Health, KeyStatus, Verdict, after_check
from control.keys.store import KeyRecord
from control.keys.validation import KeyChecker
from control.web.errors import ApiError, not_found
from core.crypto.envelope import KeyContext, WrappedKey, encrypt_with
from core.crypto.provider import KekError, KekProvider


class KeyRevocationFollowUp(Protocol):
    """What revoking a key does to the sessions using it. Sessions sit above keys (they are
    issued against one), so control/sessions/revocation.py provides this and the app
    passes it in."""

    async def revoke_sessions(
        self, conn: AsyncConnection, actor: Actor, *, tenant_id: str, key_id: str, now: dt.datetime
    ) -> list[str]: ...

    async def announce(self, session_ids: list[str]) -> None: ...


def fingerprint(secret: bytes | bytearray) -> str:
    """A non-secret identifier a customer can recompute: `printf %s "$KEY" | sha256sum`."""
    return "sha256:" + hashlib.sha256(secret).hexdigest()


async def upload_key(
    engine: AsyncEngine,
    kek: KekProvider,
    checker: KeyChecker,
    actor: Actor,
    *,
    tenant_id: str,
    api_key: str,
    name: str | None,
    make_default: bool = False,
    now: dt.datetime | None = None,
) -> KeyRecord:
    """Wrap the key, ask Anthropic about it, then store it with the status that earned.

    The check runs in a short-lived process that gets the data key sealed to it
    (control/keys/validation.py): no client library of this process ever holds the key. A
    key Anthropic refuses is not stored (422, audited as a failed upload); a key that could
    not be checked is stored `unverified` and re-checked in the background. The tenant's
    first live key becomes its default.
    """
    now = now or dt.datetime.now(dt.UTC)
    key_id = str(uuid.uuid4())
    secret = bytearray(api_key, "ascii")
    try:
        key_print = fingerprint(secret)
        last_four = secret[-4:].decode("ascii")
        async with engine.connect() as conn:
            existing = await store.find_live_by_fingerprint(conn, tenant_id, key_print)
        if existing is not None:
            raise ApiError(409, "conflict_error", f"this key is already uploaded as {existing.id}")
        refused = functools.partial(_audit_refused_upload, engine, actor, tenant_id, last_four)
        wrapped, health = await _wrap_and_check(
            kek, checker, secret, KeyContext(tenant_id=tenant_id, key_id=key_id), refused, now
        )
    finally:
        secret[:] = bytes(len(secret))
    async with engine.begin() as conn:
        becomes_default = make_default or await store.get_default(conn, tenant_id) is None
        if becomes_default:
            await store.clear_default(conn, tenant_id)
        try:
            record = await store.insert_key(
                conn,
                key_id=key_id,
                tenant_id=tenant_id,
                name=name,
                wrapped=wrapped,
                last_four=last_four,
                fingerprint=key_print,
                created_by=actor.id,
                health=health,
                is_default=becomes_default,
                now=now,
            )
        except store.DuplicateKey:
            raise ApiError(409, "conflict_error", "this key is already uploaded") from None
        except store.DefaultTaken:
            raise _default_race() from None
        await audit.record(
            conn,
            actor,
            AuditAction.KEY_UPLOAD,
            tenant_id=tenant_id,
            target_type="api_key",
            target_id=key_id,
            details={
                "last_four": last_four,
                "fingerprint": key_print,
                "kek_id": wrapped.kek_id,
                "status": health.status.value,
                "default": str(becomes_default).lower(),
            },
            now=now,
        )
    return record


async def _wrap_and_check(
    kek: KekProvider,
    checker: KeyChecker,
    secret: bytearray,
    context: KeyContext,
    refused: Callable[[str, dt.datetime], Awaitable[None]],
    now: dt.datetime,
) -> tuple[WrappedKey, Health]:
    """The key wrapped under a new data key, and its health after Anthropic's verdict. A
    refusal (KMS down, or Anthropic refusing the key) is audited through `refused`."""
    try:
        data_key = await kek.generate_data_key(context.as_dict())
    except KekError as exc:
        # KMS down or refusing: nothing is stored, and the refusal is on record.
        await refused(str(exc), now)
        raise ApiError(
            503,
            "api_error",
            "the key-encryption service is unavailable; nothing was stored, try again",
        ) from None
    try:
        wrapped = encrypt_with(data_key, secret, context)
        result = await checker.check(wrapped, context, data_key.plaintext)
    finally:
        data_key.wipe()
    if result.verdict is Verdict.REJECTED:
        await refused(f"anthropic: {result.reason}", now)
        raise ApiError(
            422,
            "validation_error",
            f"Anthropic refused this key ({result.reason}); it was not stored. "
            "Check that it is an active API key of your organisation.",
        )
    return wrapped, after_check(KeyStatus.UNVERIFIED, 0, result, now)


async def _audit_refused_upload(
    engine: AsyncEngine,
    actor: Actor,
    tenant_id: str,
    last_four: str,
    reason: str,
    now: dt.datetime,
) -> None:
    async with engine.begin() as conn:
        await audit.record(
            conn,
            actor,
            AuditAction.KEY_UPLOAD,
            tenant_id=tenant_id,
            target_type="api_key",
            outcome="failure",
            details={"last_four": last_four, "reason": reason},
            now=now,
        )


def _default_race() -> ApiError:
    return ApiError(409, "conflict_error", "another key became the default meanwhile; retry")


async def make_default(
    engine: AsyncEngine,
    actor: Actor,
    *,
    tenant_id: str,
    key_id: str,
    now: dt.datetime | None = None,
) -> KeyRecord:
    """New sessions that name no key use this one; live sessions keep theirs."""
    now = now or dt.datetime.now(dt.UTC)
    async with engine.begin() as conn:
        record = await store.get_key(conn, tenant_id, key_id)
        if record is None:
            raise not_found("key")
        if record.status is KeyStatus.REVOKED:
            raise ApiError(409, "conflict_error", f"key …{record.last_four} is revoked")
        if record.status is KeyStatus.INVALID:
            raise ApiError(
                409,
                "conflict_error",
                f"key …{record.last_four} was refused by Anthropic; it cannot be the default",
            )
        if record.is_default:
            return record
        await store.clear_default(conn, tenant_id)
        try:
            record = await store.set_default(conn, tenant_id, key_id)
        except store.DefaultTaken:
            raise _default_race() from None
        await audit.record(
            conn,
            actor,
            AuditAction.KEY_DEFAULT,
            tenant_id=tenant_id,
            target_type="api_key",
            target_id=key_id,
            details={"last_four": record.last_four},
            now=now,
        )
    return record


async def revoke_key(
    engine: AsyncEngine,
    follow_up: KeyRevocationFollowUp,
    actor: Actor,
    *,
    tenant_id: str,
    key_id: str,
    now: dt.datetime | None = None,
) -> KeyRecord:
    """Revoke a live key (its blob is destroyed) and every live session using it, whose
    proxies are told to clear. Revoking a revoked key changes nothing."""
    now = now or dt.datetime.now(dt.UTC)
    async with engine.begin() as conn:
        record = await store.revoke_key(conn, tenant_id, key_id, revoked_by=actor.id, now=now)
        if record is None:
            existing = await store.get_key(conn, tenant_id, key_id)
            if existing is None:
                raise not_found("key")
            return existing
        await audit.record(
            conn,
            actor,
            AuditAction.KEY_REVOKE,
            tenant_id=tenant_id,
            target_type="api_key",
            target_id=key_id,
            details={"last_four": record.last_four},
            now=now,
        )
        revoked_sessions = await follow_up.revoke_sessions(
            conn, actor, tenant_id=tenant_id, key_id=key_id, now=now
        )
    await follow_up.announce(revoked_sessions)
    return record
