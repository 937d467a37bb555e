"""Usage records to the Redis stream, through a bounded in-memory buffer.

`publish` never blocks the request path. A background task sends batches with XADD; if
Redis is unreachable the records wait and are retried with backoff, so none is lost while
the proxy lives; shutdown flushes what is left.
"""

from __future__ import annotations

import asyncio
import collections

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.usage import UsageRecord

log = structlog.get_logger(__name__)
BATCH = 100


class UsagePublisher:
    def __init__(
        self, redis: Redis, stream: str, *, capacity: int = 100_000, linger: float = 0.05
    ) -> None:
        self._redis = redis
        self._stream = stream
        self._queue: collections.deque[UsageRecord] = collections.deque()
        self._capacity = capacity
        # Records wait up to `linger` seconds to travel together: one round trip to Redis
        # per batch instead of per call.
        self._linger = linger
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self.dropped = 0

    def publish(self, record: UsageRecord) -> None:
        if len(self._queue) >= self._capacity:
            self._queue.popleft()
            self.dropped += 1
            log.error("usage_buffer_full_record_dropped", dropped=self.dropped)
        self._queue.append(record)
        self._drained.clear()
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def run(self) -> None:
        delay = 0.1
        while True:
            await self._wake.wait()
            if len(self._queue) < BATCH and self._linger:
                await asyncio.sleep(self._linger)
            self._wake.clear()
            while self._queue:
                batch = [self._queue[i] for i in range(min(BATCH, len(self._queue)))]
                try:
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for record in batch:
                            pipe.xadd(self._stream, record.to_fields())  # type: ignore[arg-type]
                        await pipe.execute()
                except (RedisError, OSError) as exc:
                    log.warning(
                        "usage_publish_retrying",
                        error=type(exc).__name__,
                        pending=len(self._queue),
                        delay_s=delay,
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                delay = 0.1
                for _ in batch:
                    self._queue.popleft()
            self._drained.set()

    async def flush(self, within: float) -> bool:
        """Wait up to `within` seconds for every record to be sent; False if some remain."""
        if not self._queue:
            return True
        self._wake.set()
        try:
            await asyncio.wait_for(self._drained.wait(), within)
        except TimeoutError:
            return False
        return True
