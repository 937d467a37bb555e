"""The attach step: a proxy trades its single-use bootstrap token for its session's grant.

The proxy sends the public half of an ephemeral HPKE key pair. In one transaction: check
the token, the session's state and deadline and the key; unwrap the key's data key through
the KEK provider and seal it to the proxy's public key, bound to session, tenant and key
(core/crypto/sealing.py); mark the token used; issue the proxy's own credential (`mxp_`,
stored hashed) under the next epoch, which fences out any earlier proxy of the session (it
is told to stop, and may only deliver records of calls it started before the fence); write
the `key:unwrap` audit row. The grant carries the sealed data key and the AES-GCM
ciphertext: only that proxy process can open it, and the control plane never holds the API
key's plaintext. A refused attach is audited too, in a transaction of its own, and leaves
the token unspent when the refusal is the key-encryption service's (KMS down: retry).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control.audit import store as audit
from control.audit.actions import AuditAction
from control.audit.store import Actor
from control.keys import store as key_store
from control.sessions import store
from control.sessions.lifecycle import SessionEvent, is_live, next_state
from control.sessions.signals import SignalPublisher
from control.sessions.store import SessionRecord
from control.usage import store as usage_store
from control.web.errors import ApiError
from core.crypto.envelope import KeyContext, UnwrapError, WrappedKey, unwrap_data_key
from core.crypto.provider import KekProvider
from core.crypto.sealing import SealTarget, seal, seal_info
from core.tokens import TokenKind, hash_token, new_token, tokens_match


@dataclasses.dataclass(frozen=True, slots=True)
class AttachGrant:
    session: SessionRecord
    key_id: str
    wrapped: WrappedKey
    sealed_data_key: bytes
    suite: str
    proxy_token: str = dataclasses.field(repr=False, default="")
    chain_head: tuple[int, str] | None = None  # where a previous proxy left the chain
    spent: tuple[int, int] = (0, 0)  # generation calls and output tokens already counted

    def as_json(self) -> dict[str, object]:
        s = self.session

        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        return {
            "session_id": s.id,
            "tenant_id": s.tenant_id,
            "key_id": self.key_id,
            "state": s.state.value,
            "proxy_token": self.proxy_token,
            "epoch": s.proxy_epoch,
            "deadline_at": s.deadline_at.isoformat(),
            "session_token_sha256": s.token_hash,
            "grader_token_sha256": s.grader_token_hash,
            "limits": {
                "max_requests": s.max_requests,
                "max_output_tokens": s.max_output_tokens,
                "allowed_models": s.allowed_models,
                "allowed_betas": s.allowed_betas,
                "allowed_server_tools": s.allowed_server_tools,
            },
            "spent": {"requests": self.spent[0], "output_tokens": self.spent[1]},
            "chain_head": (
                {"seq": self.chain_head[0], "link": self.chain_head[1]} if self.chain_head else None
            ),
            "sealed_key": {
                "suite": self.suite,
                "sealed_data_key": b64(self.sealed_data_key),
                "nonce": b64(self.wrapped.nonce),
                "ciphertext": b64(self.wrapped.ciphertext),
                "version": self.wrapped.version,
            },
        }


def _refusal(session: SessionRecord, token: str, now: dt.datetime) -> ApiError | None:
    """Why this attach must be refused, or None. Pure: no I/O."""
    if session.bootstrap_token_hash is None or not tokens_match(
        token, session.bootstrap_token_hash
    ):
        return ApiError(401, "authentication_error", "invalid bootstrap token")
    if session.bootstrap_used_at is not None:
        return ApiError(401, "authentication_error", "bootstrap token already used")
    if not is_live(session.state):
        return ApiError(403, "permission_error", f"session is {session.state.value}")
    if now >= session.deadline_at:
        return ApiError(403, "permission_error", "session deadline has passed")
    return None


async def _audit_unwrap(
    conn: AsyncConnection,
    actor: Actor,
    session: SessionRecord,
    outcome: str,
    details: dict[str, str],
    now: dt.datetime,
) -> None:
    await audit.record(
        conn,
        actor,
        AuditAction.KEY_UNWRAP,
        tenant_id=session.tenant_id,
        target_type="api_key",
        target_id=session.api_key_id,
        session_id=session.id,
        candidate_id=session.candidate_id,
        outcome=outcome,
        details=details,
        now=now,
    )


async def _seal_data_key(
    kek: KekProvider, session: SessionRecord, wrapped: WrappedKey, target: SealTarget
) -> bytes | ApiError:
    """The blob's data key, unwrapped and sealed to the proxy; or why it cannot be."""
    assert session.api_key_id is not None
    context = KeyContext(session.tenant_id, session.api_key_id, version=wrapped.version)
    try:
        data_key = await unwrap_data_key(kek, wrapped, context)
    except UnwrapError as exc:
        if "unavailable" in str(exc):
            return ApiError(
                503,
                "unavailable",
                "the key-encryption service is unavailable; retry with the same token",
                headers={"Retry-After": "5"},
            )
        return ApiError(409, "conflict_error", "the session's key does not unwrap; upload it again")
    try:
        info = seal_info(
            session_id=session.id, tenant_id=session.tenant_id, key_id=session.api_key_id
        )
        return seal(data_key, target, info)
    finally:
        data_key[:] = bytes(len(data_key))


async def attach(
    engine: AsyncEngine,
    signals: SignalPublisher,
    kek: KekProvider,
    actor: Actor,
    *,
    session_id: str,
    bootstrap_token: str,
    seal_to: SealTarget | ApiError,
    now: dt.datetime | None = None,
) -> AttachGrant:
    """`seal_to` is the proxy's public key, or what was wrong with the request's body: that
    is raised once the token has checked out (and spends nothing)."""
    now = now or dt.datetime.now(dt.UTC)
    async with engine.begin() as conn:
        session = await store.get_session(conn, session_id, for_update=True)
        if session is None:
            raise ApiError(401, "authentication_error", "invalid bootstrap token")
        refusal = _refusal(session, bootstrap_token, now)
        if refusal is None and isinstance(seal_to, ApiError):
            raise seal_to
        wrapped = None
        if refusal is None and session.api_key_id is not None:
            wrapped = await key_store.get_wrapped(conn, session.tenant_id, session.api_key_id)
        if refusal is None and wrapped is None:
            refusal = ApiError(403, "permission_error", "the session's key has been revoked")
        sealed = b""
        if refusal is None:
            assert wrapped is not None
            target = seal_to
            assert isinstance(target, SealTarget)
            outcome = await _seal_data_key(kek, session, wrapped, target)
            if isinstance(outcome, ApiError):
                refusal = outcome
            else:
                sealed = outcome
        if refusal is None:
            assert wrapped is not None
            assert session.api_key_id is not None
            assert isinstance(seal_to, SealTarget)
            key_id = session.api_key_id
            proxy_token = new_token(TokenKind.PROXY)
            session = await store.set_state(
                conn,
                session_id,
                next_state(session.state, SessionEvent.ATTACH),
                now=now,
                bootstrap_used_at=now,
                proxy_epoch=session.proxy_epoch + 1,
            )
            await store.issue_proxy_credential(
                conn, session.id, hash_token(proxy_token), session.proxy_epoch, now=now
            )
            await _audit_unwrap(conn, actor, session, "success", {"kek_id": wrapped.kek_id}, now)
            grant = AttachGrant(
                session=session,
                key_id=key_id,
                wrapped=wrapped,
                sealed_data_key=sealed,
                suite=seal_to.suite.value,
                proxy_token=proxy_token,
                chain_head=await usage_store.chain_head(conn, session.id),
                spent=await usage_store.budget_spent(conn, session.id),
            )
    if refusal is None:
        # Wakes the previous proxy's signal stream, if any: it finds itself fenced and stops.
        await signals.announce(session.id, session.state, None)
        return grant
    async with engine.begin() as conn:
        await _audit_unwrap(conn, actor, session, "failure", {"reason": refusal.message}, now)
    raise refusal
