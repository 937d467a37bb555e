"""Liveness and readiness endpoints."""

from __future__ import annotations

import dataclasses
import socket
from typing import Any

import pytest

from control import appkeys
from control.app import create_app
from core.redis_names import RedisNames
from core.settings import Settings

# What these tests check depends on the database: they run on SQLite and PostgreSQL.
pytestmark = pytest.mark.both_databases


async def test_healthz_answers_without_auth(client: Any) -> None:
    async with client.get("/healthz") as r:
        assert (r.status, await r.json()) == (200, {"status": "ok"})


async def test_readyz_reports_database_and_redis(client: Any) -> None:
    async with client.get("/readyz") as r:
        assert r.status == 200
        assert await r.json() == {
            "status": "ready",
            "checks": {"database": "ok", "redis": "ok", "workers": "ok", "ingest": "ok"},
        }


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_readyz_is_503_when_redis_is_unreachable(
    aiohttp_client: Any, settings: Settings
) -> None:
    broken = dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{_closed_port()}/0")
    client = await aiohttp_client(create_app(broken))
    async with client.get("/readyz") as r:
        assert r.status == 503
        assert await r.json() == {
            "status": "unavailable",
            "checks": {"database": "ok", "redis": "failed", "workers": "ok", "ingest": "failed"},
        }


async def test_readyz_is_503_while_a_worker_of_this_process_is_down(
    aiohttp_client: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await aiohttp_client(create_app(settings, workers=True))
    async with client.get("/readyz") as r:
        assert ((await r.json())["checks"]["workers"], r.status) == ("ok", 200)
    workers = client.app[appkeys.workers]
    monkeypatch.setattr(workers.states[0], "running", False)  # crashed, waiting to restart
    async with client.get("/readyz") as r:
        assert r.status == 503
        assert (await r.json())["checks"]["workers"] == "failed"


async def test_readyz_is_503_while_usage_ingestion_falls_behind(
    client: Any, settings: Settings
) -> None:
    names = RedisNames(settings.redis_prefix)
    redis = client.app[appkeys.redis]
    # Queued at 1970-01-01T00:00:01Z (a stream entry's id is its arrival time in ms).
    await redis.xadd(names.usage_stream, {"record": "{}"}, id="1000-0")
    async with client.get("/readyz") as r:
        assert r.status == 503
        assert (await r.json())["checks"]["ingest"] == "failed"
    await redis.delete(names.usage_stream)  # stored: nothing waits any more
    async with client.get("/readyz") as r:
        assert r.status == 200


async def test_responses_carry_a_request_id(client: Any) -> None:
    async with client.get("/healthz", headers={"X-Request-Id": "trace-1234abcd"}) as r:
        assert r.headers["X-Request-Id"] == "trace-1234abcd"
    async with client.get("/healthz", headers={"X-Request-Id": "bad id with spaces"}) as r:
        assert r.headers["X-Request-Id"] != "bad id with spaces"
        assert len(r.headers["X-Request-Id"]) == 32
