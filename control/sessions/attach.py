"""The attach step: a proxy trades its single-use bootstrap token for the wrapped key.

In one transaction: check the token, the session's state and deadline and the key; mark
the token used; issue the proxy's own credential (`mxp_`, stored hashed) under the next
epoch, which fences out any earlier proxy of the session (it is told to stop, and may only
deliver the records of calls it started before the fence); write the `key:unwrap` audit
row; hand back the wrapped blob. A refused attach is audited too, in a transaction of its
own.
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
from core.crypto.envelope import WrappedKey
from core.tokens import TokenKind, hash_token, new_token, tokens_match


@dataclasses.dataclass(frozen=True, slots=True)
class AttachGrant:
    session: SessionRecord
    key_id: str
    wrapped: WrappedKey
    proxy_token: str = dataclasses.field(repr=False, default="")
    chain_head: tuple[int, str] | None = None  # where a previous proxy left the chain

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
            },
            "chain_head": (
                {"seq": self.chain_head[0], "link": self.chain_head[1]} if self.chain_head else None
            ),
            "wrapped_key": {
                "kek_id": self.wrapped.kek_id,
                "encrypted_data_key": b64(self.wrapped.encrypted_data_key),
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


async def attach(
    engine: AsyncEngine,
    signals: SignalPublisher,
    actor: Actor,
    *,
    session_id: str,
    bootstrap_token: str,
    now: dt.datetime | None = None,
) -> AttachGrant:
    now = now or dt.datetime.now(dt.UTC)
    async with engine.begin() as conn:
        session = await store.get_session(conn, session_id, for_update=True)
        if session is None:
            raise ApiError(401, "authentication_error", "invalid bootstrap token")
        refusal = _refusal(session, bootstrap_token, now)
        wrapped = None
        if refusal is None and session.api_key_id is not None:
            wrapped = await key_store.get_wrapped(conn, session.tenant_id, session.api_key_id)
        if refusal is None and wrapped is None:
            refusal = ApiError(403, "permission_error", "the session's key has been revoked")
        if refusal is None:
            assert wrapped is not None
            assert session.api_key_id is not None
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
                key_id=session.api_key_id,
                wrapped=wrapped,
                proxy_token=proxy_token,
                chain_head=await usage_store.chain_head(conn, session.id),
            )
    if refusal is None:
        # Wakes the previous proxy's signal stream, if any: it finds itself fenced and stops.
        await signals.announce(session.id, session.state, None)
        return grant
    async with engine.begin() as conn:
        await _audit_unwrap(conn, actor, session, "failure", {"reason": refusal.message}, now)
    raise refusal


REARM_WINDOW = dt.timedelta(minutes=5)


async def attach_failed(
    engine: AsyncEngine,
    actor: Actor,
    *,
    session_id: str,
    bootstrap_token: str,
    reason: str,
    now: dt.datetime | None = None,
) -> None:
    """A proxy got its grant but could not unwrap the key (KMS down, say): audit the
    failure and re-arm the bootstrap token, so the same proxy start can simply retry.
    Only the token's holder can do this, and only shortly after its attach."""
    now = now or dt.datetime.now(dt.UTC)
    async with engine.begin() as conn:
        session = await store.get_session(conn, session_id, for_update=True)
        if (
            session is None
            or session.bootstrap_token_hash is None
            or not tokens_match(bootstrap_token, session.bootstrap_token_hash)
        ):
            raise ApiError(401, "authentication_error", "invalid bootstrap token")
        used = session.bootstrap_used_at
        if used is None or now - used > REARM_WINDOW or not is_live(session.state):
            raise ApiError(409, "conflict_error", "no recent attach of this token to undo")
        await store.update_session(conn, session_id, now=now, bootstrap_used_at=None)
        await _audit_unwrap(
            conn, actor, session, "failure", {"reason": reason, "stage": "proxy"}, now
        )
