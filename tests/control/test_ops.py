"""Liveness and readiness endpoints."""

from __future__ import annotations

import dataclasses
import socket
from typing import Any

import pytest

from control.app import create_app
from core.settings import Settings

# What these tests check depends on the database: they run on SQLite and PostgreSQL.
pytestmark = pytest.mark.both_databases


async def test_healthz_answers_without_auth(client: Any) -> None:
    async with client.get("/healthz") as r:
        assert (r.status, await r.json()) == (200, {"status": "ok"})


async def test_readyz_reports_database_and_redis(client: Any) -> None:
    async with client.get("/readyz") as r:
        assert r.status == 200
        assert await r.json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}


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
            "checks": {"database": "ok", "redis": "failed"},
        }


async def test_responses_carry_a_request_id(client: Any) -> None:
    async with client.get("/healthz", headers={"X-Request-Id": "trace-1234abcd"}) as r:
        assert r.headers["X-Request-Id"] == "trace-1234abcd"
    async with client.get("/healthz", headers={"X-Request-Id": "bad id with spaces"}) as r:
        assert r.headers["X-Request-Id"] != "bad id with spaces"
        assert len(r.headers["X-Request-Id"]) == 32
