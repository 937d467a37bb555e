"""No record can stop usage ingestion: poison from one tenant goes to the dead-letter table
with its reason, and every other record, from every tenant, is stored."""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy.exc import DataError
from sqlalchemy.ext.asyncio import AsyncEngine

from control.usage import ingest, store
from control.usage.ingest import UsageIngester
from control.usage.intake import TRUNCATED_MARK, sort_records
from core.redis_names import RedisNames
from core.settings import Settings
from core.usage import UsageRecord
from tests.control.test_usage_ingest import record
from tests.factories import fake_anthropic_key, make_tenant

pytestmark = pytest.mark.both_databases


async def _session(client: Any, engine: AsyncEngine, name: str) -> tuple[Any, str]:
    tenant = await make_tenant(engine, name)
    async with client.post("/v1/keys", json={"api_key": fake_anthropic_key()}, headers=tenant.auth):
        pass
    async with client.post(
        "/v1/sessions", json={"candidate_email": f"c@{name}.example"}, headers=tenant.auth
    ) as r:
        return tenant, (await r.json())["id"]


def _entry(data: Any) -> dict[str, str]:
    return {"record": json.dumps(data) if not isinstance(data, str) else data}


def _poison(session_id: str) -> list[dict[str, str]]:
    """Every kind of bad entry one tenant's proxy could put on the stream."""
    good = record(session_id).as_dict()
    return [
        _entry({**good, "record_id": uuid.uuid4().hex, "started_at": "yesterday"}),
        _entry({**good, "record_id": uuid.uuid4().hex, "started_at": "0001-01-01T00:00:00+01:00"}),
        _entry({**good, "record_id": uuid.uuid4().hex, "input_tokens": 2**40}),
        _entry({**good, "record_id": uuid.uuid4().hex, "output_tokens": "12"}),
        _entry({**good, "record_id": uuid.uuid4().hex, "ttfb_ms": 10**400}),
        _entry({**good, "record_id": uuid.uuid4().hex, "stream": "yes"}),
        _entry({**good, "record_id": uuid.uuid4().hex, "session_id": str(uuid.uuid4())}),
        _entry({**good, "record_id": "not-hex"}),
        _entry([1, 2, 3]),
        _entry("not json at all"),
        {"other": "field"},
    ]


async def _drain(ingester: UsageIngester, redis: Redis, names: RedisNames) -> None:
    for _ in range(20):
        await ingester.ingest_once(block_ms=1)
        if await redis.xlen(names.usage_stream) == 0:
            return
    raise AssertionError("the stream did not drain")


async def _stored(engine: AsyncEngine, session_id: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        return await store.list_records(conn, session_id)


async def test_poison_from_one_tenant_is_dead_lettered_and_the_others_are_stored(
    client: Any, engine: AsyncEngine, settings: Settings
) -> None:
    _, poisoner = await _session(client, engine, "poisoner")
    _, victim = await _session(client, engine, "victim")
    names = RedisNames(settings.redis_prefix)
    redis = Redis.from_url(settings.redis_url or "")
    ingester = UsageIngester(redis, engine, names, consumer="t", batch=50)
    await ingester.ensure_group()
    long_model = "claude-" + "x" * 500
    kept = record(poisoner, model_requested=long_model, model_served="claude\x00haiku")
    duplicate = record(victim)
    entries = [
        record(victim).to_fields(),
        *_poison(poisoner),
        kept.to_fields(),
        duplicate.to_fields(),
        duplicate.to_fields(),
        record(victim).to_fields(),
    ]
    for fields in entries:
        await redis.xadd(names.usage_stream, fields)  # type: ignore[arg-type]
    await _drain(ingester, redis, names)

    assert len(await _stored(engine, victim)) == 3  # the duplicate once
    [cut] = await _stored(engine, poisoner)
    assert cut["record_id"] == kept.record_id
    assert len(cut["model_requested"]) == 200
    assert cut["model_requested"].endswith(TRUNCATED_MARK)
    assert cut["model_served"] == "claude\ufffdhaiku"
    async with engine.connect() as conn:
        letters = await store.list_dead_letters(conn, limit=100)
    reasons = sorted(letter["reason"].split(":")[0] for letter in letters)
    assert reasons == ["invalid"] * 7 + ["unknown_session"] + ["unreadable"] * 3
    assert all(letter["tenant_id"] in (None, "claimed-by-the-proxy") for letter in letters)
    assert await redis.xlen(names.usage_stream) == 0
    await redis.aclose()


async def test_a_record_the_database_refuses_is_dead_lettered_and_its_batch_stored(
    client: Any, engine: AsyncEngine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the checks miss: a database error on one record sends the batch through
    one record at a time, and only that record is set aside."""
    _, session_id = await _session(client, engine, "acme")
    refused = record(session_id, model_requested="the-database-refuses-this")
    insert = store.insert_records

    async def picky(conn: Any, records: Any, *, now: Any) -> Any:
        if any(r.model_requested == refused.model_requested for r in records):
            raise DataError("INSERT", {}, Exception("value out of range for this column"))
        return await insert(conn, records, now=now)

    monkeypatch.setattr(ingest.store, "insert_records", picky)
    names = RedisNames(settings.redis_prefix)
    redis = Redis.from_url(settings.redis_url or "")
    ingester = UsageIngester(redis, engine, names, consumer="t")
    await ingester.ensure_group()
    before, after = record(session_id), record(session_id)
    for entry in (before, refused, after):
        await redis.xadd(names.usage_stream, entry.to_fields())  # type: ignore[arg-type]
    assert await ingester.ingest_once() == 2
    stored = {row["record_id"] for row in await _stored(engine, session_id)}
    assert stored == {before.record_id, after.record_id}
    async with engine.connect() as conn:
        [letter] = await store.list_dead_letters(conn, limit=10)
    assert letter["record_id"] == refused.record_id
    assert letter["reason"].startswith("refused_by_database: ")
    assert "value out of range" in letter["reason"]
    assert json.loads(letter["payload"])["record_id"] == refused.record_id
    assert await redis.xlen(names.usage_stream) == 0
    await redis.aclose()


def test_intake_keeps_an_overlong_model_name_cut_and_refuses_bad_types() -> None:
    """At the proxy's door: a free-text field too long for its column is kept, cut and
    marked (the call is still accounted for); wrong types and dates are refused."""
    base = record("s1", tenant_id="t1").as_dict()
    items: list[object] = [
        {**base, "model_requested": "m" * 5000},
        {**base, "record_id": uuid.uuid4().hex, "input_tokens": 2**31},
        {**base, "record_id": uuid.uuid4().hex, "started_at": "2026-13-45T00:00:00Z"},
        {**base, "record_id": uuid.uuid4().hex, "started_at": "2026-11-29T10:00:00"},
        {**base, "record_id": uuid.uuid4().hex, "latency_ms": 10**400},
        {**base, "record_id": uuid.uuid4().hex, "usage": {"nested": ["x" * 20_000]}},
    ]
    result = sort_records(items, session_id="s1", tenant_id="t1")
    assert [r.detail.split(":")[0] for r in result.refused] == [
        "input_tokens",
        "started_at",
        "started_at",
        "latency_ms",
    ]
    cut, oversized_usage = result.accepted
    assert cut.model_requested is not None
    assert len(cut.model_requested) == 200
    assert cut.model_requested.endswith(TRUNCATED_MARK)
    assert oversized_usage.usage == {"truncated": True}


def test_a_dead_letter_keeps_the_proxy_claims_it_could_read() -> None:
    bad = dataclasses.replace(record("s1"), started_at="never").as_dict()
    letter = ingest.decode(b"1-0", _entry(bad))
    assert isinstance(letter, store.DeadLetter)
    assert (letter.record_id, letter.session_id) == (bad["record_id"], "s1")
    assert letter.reason.startswith("invalid: started_at")
    assert not isinstance(ingest.decode(b"1-1", record("s1").to_fields()), store.DeadLetter)
    assert isinstance(ingest.decode(b"1-1", record("s1").to_fields()), UsageRecord)
