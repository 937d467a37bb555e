"""The embedded Redis server: started once per data directory, shared by later callers."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from core.redis_server import ensure_embedded_redis, ping, redis_url, stop_embedded_redis
from core.settings import Settings


@pytest.fixture
def short_data_dir() -> Iterator[Path]:
    # unix socket paths are limited to ~100 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="mx") as directory:
        yield Path(directory)


async def test_first_caller_starts_it_and_later_callers_share_it(short_data_dir: Path) -> None:
    settings = Settings(data_dir=short_data_dir)
    socket_path = settings.embedded_redis_socket
    try:
        url = redis_url(settings)
        assert url == f"unix://{socket_path}"
        client = Redis.from_url(url)
        await client.set("shared", "yes")
        # A second process given the same data directory gets the same server.
        assert ensure_embedded_redis(socket_path) == url
        second = Redis.from_url(url)
        assert await second.get("shared") == b"yes"
        await second.aclose()
        await client.aclose()
    finally:
        stop_embedded_redis(socket_path)
    assert not ping(socket_path)


def test_configured_redis_url_wins(short_data_dir: Path) -> None:
    settings = Settings(data_dir=short_data_dir, redis_url="redis://127.0.0.1:6379/0")
    assert redis_url(settings) == "redis://127.0.0.1:6379/0"
    assert not settings.embedded_redis_socket.exists()
