"""What revoking a key does to the sessions that use it: each live one is revoked, audited,
and its proxy told to clear. control/keys calls this through `KeyRevocationFollowUp`
(keys sit below sessions, which are issued against them)."""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy.ext.asyncio import AsyncConnection

from control.audit.actions import AuditAction
from control.audit.store import Actor
from control.sessions import store
from control.sessions.lifecycle import SessionState
from control.sessions.service import audit_session
from control.sessions.signals import SignalPublisher
from core.signals import Signal


@dataclasses.dataclass(frozen=True, slots=True)
class RevokeSessionsOfKey:
    signals: SignalPublisher

    async def revoke_sessions(
        self, conn: AsyncConnection, actor: Actor, *, tenant_id: str, key_id: str, now: dt.datetime
    ) -> list[str]:
        """Revoke the key's live sessions in the caller's transaction; their ids."""
        revoked = []
        for session in await store.live_sessions_of_key(conn, key_id):
            await store.set_state(conn, session.id, SessionState.REVOKED, now=now)
            await audit_session(
                conn,
                actor,
                AuditAction.SESSION_REVOKE,
                tenant_id=tenant_id,
                session_id=session.id,
                candidate_id=session.candidate_id,
                now=now,
                details={"reason": "key revoked", "key_id": key_id},
            )
            revoked.append(session.id)
        return revoked

    async def announce(self, session_ids: list[str]) -> None:
        """After the commit: tell each revoked session's proxy to clear its key."""
        for session_id in session_ids:
            await self.signals.announce(session_id, SessionState.REVOKED, Signal.REVOKE)
