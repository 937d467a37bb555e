"""The usage ingester: idempotent by record id, tenant taken from the session, summaries."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from control.usage.ingest import UsageIngester
from control.usage.summary import summarise
from core.redis_names import RedisNames
from core.settings import Settings
from core.usage import UsageRecord
from tests.factories import fake_anthropic_key, make_tenant

# What these tests check depends on the database: they run on SQLite and PostgreSQL.
pytestmark = pytest.mark.both_databases


def record(session_id: str, **overrides: Any) -> UsageRecord:
    base = UsageRecord(
        record_id=uuid.uuid4().hex,
        session_id=session_id,
        tenant_id="claimed-by-the-proxy",
        actor="candidate",
        method="POST",
        endpoint="/v1/messages",
        started_at=dt.datetime.now(dt.UTC).isoformat(),
        stream=False,
        http_status=200,
        complete=True,
        model_served="claude-haiku-4-5",
        input_tokens=10,
        output_tokens=5,
        cache_creation_input_tokens=2,
        cache_read_input_tokens=1,
        latency_ms=100.0,
        ttfb_ms=50.0,
    )
    return dataclasses.replace(base, **overrides)


async def test_duplicates_are_stored_once_and_the_summary_adds_up(
    client: Any, engine: AsyncEngine, settings: Settings
) -> None:
    tenant = await make_tenant(engine)
    async with client.post("/v1/keys", json={"api_key": fake_anthropic_key()}, headers=tenant.auth):
        pass
    async with client.post(
        "/v1/sessions", json={"candidate_email": "c@example.com"}, headers=tenant.auth
    ) as r:
        session_id = (await r.json())["id"]
    names = RedisNames(settings.redis_prefix)
    redis = Redis.from_url(settings.redis_url or "")
    first = record(session_id)
    retried = record(
        session_id,
        http_status=529,
        error_type="overloaded_error",
        input_tokens=None,
        output_tokens=None,
        cache_creation_input_tokens=None,
        cache_read_input_tokens=None,
    )
    orphan = record(str(uuid.uuid4()))
    for entry in (first, first, retried, orphan):
        await redis.xadd(names.usage_stream, entry.to_fields())  # type: ignore[arg-type]
    await redis.xadd(names.usage_stream, {"record": "not json"})
    ingester = UsageIngester(redis, engine, names, consumer="t")
    await ingester.ensure_group()
    assert await ingester.ingest_once() == 3  # first twice (one row), retried; orphan refused
    assert await ingester.ingest_once() == 0
    assert await redis.xlen(names.usage_stream) == 0  # acknowledged entries are trimmed
    async with client.get(f"/v1/sessions/{session_id}/usage", headers=tenant.auth) as r:
        rows = (await r.json())["records"]
    assert sorted(row["record_id"] for row in rows) == sorted([first.record_id, retried.record_id])
    assert {row["tenant_id"] for row in rows} == {tenant.tenant_id}
    async with client.get(f"/v1/sessions/{session_id}/usage/summary", headers=tenant.auth) as r:
        summary = await r.json()
    assert summary["calls"] == 2
    assert summary["tokens"] == {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_creation_input_tokens": 2,
        "cache_read_input_tokens": 1,
    }
    assert summary["errors"] == {"overloaded_error": 1}
    assert summary["statuses"] == {"200": 1, "529": 1}
    await redis.delete(names.usage_stream)
    await redis.aclose()


def test_percentiles_are_nearest_rank() -> None:
    rows = [
        {
            "latency_ms": float(v),
            "ttfb_ms": None,
            "endpoint": "/v1/messages",
            "model_served": "m",
            "model_requested": "m",
            "complete": True,
        }
        for v in range(1, 101)
    ]
    summary = summarise(rows)
    assert summary["latency_ms"] == {"p50": 50.0, "p95": 95.0}
    assert summary["ttfb_ms"] == {"p50": None, "p95": None}
