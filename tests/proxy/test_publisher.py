"""The usage publisher keeps records while Redis is away and delivers them when it returns."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path

from redis.asyncio import Redis

from core.redis_server import ensure_embedded_redis, stop_embedded_redis
from core.tasks import spawn
from proxy.publisher import UsagePublisher
from tests.control.test_usage_ingest import record


async def test_a_record_published_while_redis_is_down_arrives_when_it_returns() -> None:
    with tempfile.TemporaryDirectory(prefix="mx") as directory:
        socket_path = Path(directory) / "redis.sock"
        url = await asyncio.to_thread(ensure_embedded_redis, socket_path)
        redis = Redis.from_url(url, socket_timeout=2)
        publisher = UsagePublisher(redis, "usage")
        task = spawn(publisher.run(), name="publisher-under-test")
        try:
            publisher.publish(record("s1"))
            assert await publisher.flush(5)
            await asyncio.to_thread(stop_embedded_redis, socket_path)

            publisher.publish(record("s2"))
            assert not await publisher.flush(0.5)  # Redis is down: kept, not lost
            assert publisher.pending == 1

            await asyncio.to_thread(ensure_embedded_redis, socket_path)
            assert await publisher.flush(15)
            entries = await redis.xrange("usage")
            assert [e[1][b"record"].count(b'"session_id": "s') for e in entries] == [1, 1]
            assert b'"s2"' in entries[1][1][b"record"]
        finally:
            await publisher.flush(1)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await redis.aclose()
            await asyncio.to_thread(stop_embedded_redis, socket_path)
