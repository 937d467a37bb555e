"""Telling a session's proxy about changes, across control-plane replicas.

The database is the truth. After a change commits, `SignalPublisher` publishes the
session's id and signal on internal Redis pub/sub. Every replica's `SignalHub` holds one
pattern subscription and wakes the signal streams of the proxies connected to it; each
stream then re-reads the session from the database and tells its proxy (see
control/sessions/proxy_link.py). Proxies never touch Redis. A stream also keeps the
session's "proxy online" key fresh while its proxy is connected.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from control.sessions.lifecycle import SessionState
from core.redis_names import RedisNames
from core.signals import Signal

log = structlog.get_logger(__name__)
LIVENESS_TTL_S = 15
FENCE_POLL_S = 0.05
_DELETE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Not a signal: tells a stream to re-read its session (the hub lost and regained Redis,
# so a message may have been missed), or that this process is shutting down.
RESYNC = "resync"
CLOSING = "closing"


class SignalPublisher:
    def __init__(self, redis: Redis, names: RedisNames) -> None:
        self._redis = redis
        self._names = names

    async def announce(self, session_id: str, state: SessionState, signal: Signal | None) -> None:
        """Wake the session's proxy stream, wherever it is connected, to re-read the session.

        Called after the database commit: the database is the source of truth, so a Redis
        failure is logged rather than undoing the change. Proxies re-read the session at
        least every STATE_REREAD_S (proxy_link.py) and enforce the deadline themselves.
        """
        await self._publish(session_id, signal.value if signal is not None else RESYNC, state)

    async def announce_grader(self, session_id: str) -> None:
        """A new grader token: running proxies re-read its hash (the old one stops working)."""
        await self._publish(session_id, Signal.GRADER.value, None)

    async def _publish(self, session_id: str, payload: str, state: SessionState | None) -> None:
        try:
            await self._redis.publish(self._names.session_channel(session_id), payload)
        except (RedisError, OSError) as exc:
            log.error(
                "session_signal_not_published",
                session_id=session_id,
                state=state.value if state is not None else None,
                error=type(exc).__name__,
            )

    async def mark_online(self, session_id: str, epoch: int) -> None:
        """The proxy of attach number `epoch` holds its signal stream here."""
        with contextlib.suppress(RedisError, OSError):
            await self._redis.set(
                self._names.liveness_key(session_id), str(epoch), ex=LIVENESS_TTL_S
            )

    async def mark_offline(self, session_id: str, epoch: int) -> None:
        """Its stream ended (unless a later epoch's proxy has marked itself since)."""
        with contextlib.suppress(RedisError, OSError):
            await self._redis.eval(
                _DELETE_IF_EQUAL, 1, self._names.liveness_key(session_id), str(epoch)
            )

    async def wait_offline(self, session_id: str, epoch: int, within: float) -> bool:
        """Wait up to `within` seconds until the proxy of attach `epoch` is no longer
        online (a fenced proxy clears its key and drops its stream); False if it still is."""
        key = self._names.liveness_key(session_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            try:
                value = await self._redis.get(key)
            except (RedisError, OSError):
                return False
            if value is None or int(value) != epoch:
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(FENCE_POLL_S)

    async def proxy_online(self, session_id: str) -> bool | None:
        try:
            return bool(await self._redis.exists(self._names.liveness_key(session_id)))
        except (RedisError, OSError):
            return None


class SignalHub:
    """One pub/sub subscription per process, fanned out to the signal streams held here."""

    def __init__(self, redis: Redis, names: RedisNames) -> None:
        self._redis = redis
        self._names = names
        self._pattern = names.session_channel("*")
        self._head, _, self._tail = self._pattern.partition("*")
        self._watchers: dict[str, set[asyncio.Queue[str]]] = {}
        self.subscribed = asyncio.Event()
        self.closing = False
        self._stopped = False

    @contextlib.contextmanager
    def watch(self, session_id: str) -> Iterator[asyncio.Queue[str]]:
        """A queue that receives each signal for `session_id` while the block runs."""
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=64)
        self._watchers.setdefault(session_id, set()).add(queue)
        try:
            yield queue
        finally:
            watchers = self._watchers.get(session_id)
            if watchers is not None:
                watchers.discard(queue)
                if not watchers:
                    del self._watchers[session_id]

    @property
    def watching(self) -> int:
        return sum(len(queues) for queues in self._watchers.values())

    def _deliver(self, session_id: str, payload: str) -> None:
        for queue in self._watchers.get(session_id, ()):
            if queue.full():
                # A slow stream only needs to know it must re-read: any one message does.
                continue
            queue.put_nowait(payload)

    def _broadcast(self, payload: str) -> None:
        for session_id in list(self._watchers):
            self._deliver(session_id, payload)

    def _session_of(self, channel: bytes | str) -> str | None:
        name = channel.decode() if isinstance(channel, bytes) else channel
        if not (name.startswith(self._head) and name.endswith(self._tail)):
            return None
        return name[len(self._head) : len(name) - len(self._tail)] or None

    def close(self) -> None:
        """Shutting down: every stream held here ends, and its proxy reconnects elsewhere."""
        self.closing = True
        self._broadcast(CLOSING)

    def stop(self) -> None:
        """End `run` within a second. (redis-py's pub/sub can swallow a task cancellation
        while it waits for a message, so the loop also checks this flag.)"""
        self._stopped = True

    async def run(self) -> None:
        """Relay signals until stopped; a lost subscription is re-made, and every stream
        re-reads its session afterwards (a signal may have been missed meanwhile)."""
        delay = 0.2
        while not self._stopped:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.psubscribe(self._pattern)
                    if not self.subscribed.is_set():
                        self.subscribed.set()
                    else:
                        self._broadcast(RESYNC)
                    delay = 0.2
                    while not self._stopped:
                        message = await pubsub.get_message(timeout=1.0)
                        if message is None or message.get("type") != "pmessage":
                            continue
                        session_id = self._session_of(message["channel"])
                        if session_id is not None:
                            data = message["data"]
                            self._deliver(
                                session_id, data.decode() if isinstance(data, bytes) else data
                            )
            except (RedisError, OSError) as exc:
                log.warning("signal_hub_subscription_lost", error=type(exc).__name__, delay_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
