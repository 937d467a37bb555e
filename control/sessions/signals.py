"""Telling a session's proxy about state changes: a state key it re-reads, and pub/sub."""

from __future__ import annotations

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from control.sessions.lifecycle import SessionState
from core.redis_names import RedisNames
from core.signals import Signal

log = structlog.get_logger(__name__)
STATE_TTL_S = 30 * 24 * 3600


class SignalPublisher:
    def __init__(self, redis: Redis, names: RedisNames) -> None:
        self._redis = redis
        self._names = names

    async def announce(self, session_id: str, state: SessionState, signal: Signal | None) -> None:
        """Record the state (for proxies that re-read it) and publish the signal, if any.

        Called after the database commit: the database is the source of truth, so a Redis
        failure is logged rather than undoing the change; proxies also enforce the deadline.
        """
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._names.session_state_key(session_id), state.value, ex=STATE_TTL_S)
                if signal is not None:
                    pipe.publish(self._names.session_channel(session_id), signal.value)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.error(
                "session_signal_not_published",
                session_id=session_id,
                state=state.value,
                error=type(exc).__name__,
            )

    async def announce_grader(self, session_id: str, grader_sha256: str) -> None:
        """Tell running proxies the grader token's new hash (the old one stops working)."""
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._names.grader_key(session_id), grader_sha256, ex=STATE_TTL_S)
                pipe.publish(self._names.session_channel(session_id), Signal.GRADER.value)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.error("grader_token_not_published", session_id=session_id, error=type(exc).__name__)

    async def proxy_online(self, session_id: str) -> bool | None:
        try:
            return bool(await self._redis.exists(self._names.liveness_key(session_id)))
        except (RedisError, OSError):
            return None
