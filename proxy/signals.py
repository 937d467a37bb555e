"""Obeying the control plane: pub/sub signals, a periodic state re-read, and liveness.

A signal on the session's channel stops the proxy at once. Because pub/sub drops messages
sent while a subscriber is away, the session-state key is also re-read after every
(re)subscription and every `poll_interval` seconds: a missed `end` is obeyed within that
time. The same loop refreshes the liveness key the control plane shows as "proxy online".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.redis_names import RedisNames
from core.signals import GRADING_STATES, LIVE_STATES, Signal, decode_signal

log = structlog.get_logger(__name__)


class SignalWatcher:
    def __init__(
        self,
        redis: Redis,
        names: RedisNames,
        session_id: str,
        on_stop: Callable[[str], None],
        *,
        on_submit: Callable[[], None] | None = None,
        on_grader: Callable[[str], None] | None = None,
        poll_interval: float = 2.0,
        liveness_ttl: int = 15,
    ) -> None:
        self._redis = redis
        self._names = names
        self._session_id = session_id
        self._on_stop = on_stop
        self._on_submit = on_submit
        self._on_grader = on_grader
        self._poll_interval = poll_interval
        self._liveness_ttl = liveness_ttl
        self._running = True

    def stop(self) -> None:
        """End both loops. (redis-py's pub/sub can swallow a task cancellation while it
        waits for a message, so the loops also check this flag at least once a second.)"""
        self._running = False

    async def check_state(self) -> None:
        """Stop if the control plane has recorded a state that is not live."""
        raw = await self._redis.get(self._names.session_state_key(self._session_id))
        state = raw.decode() if isinstance(raw, bytes) else raw
        if state is not None and state not in LIVE_STATES:
            self._on_stop(f"session_{state}")
        elif state in GRADING_STATES and self._on_submit is not None:
            self._on_submit()
        if self._on_grader is not None:
            grader = await self._redis.get(self._names.grader_key(self._session_id))
            if grader is not None:
                self._on_grader(grader.decode() if isinstance(grader, bytes) else grader)

    async def listen(self) -> None:
        channel = self._names.session_channel(self._session_id)
        delay = 0.2
        while self._running:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(channel)
                    await self.check_state()  # whatever happened while unsubscribed
                    delay = 0.2
                    while self._running:
                        message = await pubsub.get_message(timeout=1.0)
                        if message is None or message.get("type") != "message":
                            continue
                        signal = decode_signal(message["data"])
                        if signal is Signal.GRADER:
                            await self.check_state()
                        elif signal is Signal.SUBMIT:
                            if self._on_submit is not None:
                                self._on_submit()
                        elif signal is not None:
                            self._on_stop(f"signal_{signal.value}")
            except (RedisError, OSError) as exc:
                log.warning("signal_subscription_lost", error=type(exc).__name__, delay_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def poll(self) -> None:
        liveness = self._names.liveness_key(self._session_id)
        while self._running:
            try:
                await self._redis.set(liveness, "1", ex=self._liveness_ttl)
                await self.check_state()
            except (RedisError, OSError) as exc:
                log.warning("session_state_poll_failed", error=type(exc).__name__)
            await asyncio.sleep(self._poll_interval)

    async def withdraw(self) -> None:
        """Remove the liveness key on the way out (best effort)."""
        with contextlib.suppress(RedisError, OSError):
            await self._redis.delete(self._names.liveness_key(self._session_id))
