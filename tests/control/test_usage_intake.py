"""Usage records at intake: each checked on its own, against the columns it is stored in,
and against the session of the proxy credential that sent it. Pure: no I/O."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from control.usage.intake import sort_records
from tests.control.test_usage_ingest import record

# What these tests check depends on the database: they run on SQLite and PostgreSQL.
pytestmark = pytest.mark.both_databases

SESSION, TENANT = "s-1", "t-1"


def good(**overrides: Any) -> dict[str, Any]:
    return {**record(SESSION, tenant_id=TENANT).as_dict(), **overrides}


@pytest.mark.parametrize(
    ("overrides", "where"),
    [
        ({"model_requested": 7}, "model_requested"),  # too long is kept, cut (test_ingest_poison)
        ({"input_tokens": 2**31}, "input_tokens"),  # past the INTEGER column
        ({"started_at": "yesterday"}, "started_at"),
        ({"started_at": "2026-11-29T10:00:00"}, "started_at"),  # no offset
        ({"output_tokens": 12.0}, "output_tokens"),
        ({"output_tokens": -1}, "output_tokens"),
        ({"output_tokens": 10**30}, "output_tokens"),
        ({"latency_ms": float("nan")}, "latency_ms"),
        ({"actor": "admin"}, "actor"),
        ({"record_id": "../../etc"}, "record_id"),
        ({"message_sha256s": ["not-a-digest"]}, "message_sha256s"),
        ({"http_status": "200"}, "http_status"),
        ({"chain_seq": 2**40}, "chain_seq"),
    ],
)
def test_a_bad_record_is_refused_alone_and_the_rest_go_through(
    overrides: dict[str, Any], where: str
) -> None:
    bad, fine = good(**overrides), good()
    result = sort_records([bad, fine], session_id=SESSION, tenant_id=TENANT)
    assert [r.record_id for r in result.accepted] == [fine["record_id"]]
    [refusal] = result.refused
    assert refusal.reason == "invalid"
    assert refusal.detail.startswith(where)


def test_anything_but_an_object_is_refused_without_an_id() -> None:
    result = sort_records([None, 7, "x", [1]], session_id=SESSION, tenant_id=TENANT)
    assert result.accepted == []
    assert [(r.record_id, r.reason) for r in result.refused] == [(None, "invalid")] * 4


@pytest.mark.parametrize(
    "overrides", [{"session_id": "s-2"}, {"tenant_id": "t-2"}], ids=["session", "tenant"]
)
def test_a_record_naming_another_session_or_tenant_is_refused(overrides: dict[str, Any]) -> None:
    result = sort_records([good(**overrides)], session_id=SESSION, tenant_id=TENANT)
    assert result.accepted == []
    assert [r.reason for r in result.refused] == ["wrong_session"]


def test_a_good_record_is_accepted_as_sent_with_its_time_in_utc() -> None:
    sent = good(started_at="2026-11-29T11:00:00+01:00", latency_ms=12)
    [accepted] = sort_records([sent], session_id=SESSION, tenant_id=TENANT).accepted
    assert accepted.started_at == "2026-11-29T10:00:00+00:00"
    assert accepted.latency_ms == 12.0
    assert accepted.record_id == sent["record_id"]


def test_admit_refuses_calls_started_after_a_fence() -> None:
    fence = dt.datetime(2026, 11, 29, 10, tzinfo=dt.UTC)
    early = good(started_at=(fence - dt.timedelta(seconds=1)).isoformat())
    late = good(started_at=(fence + dt.timedelta(seconds=1)).isoformat())
    result = sort_records(
        [early, late], session_id=SESSION, tenant_id=TENANT, admit=lambda t: t < fence
    )
    assert [r.record_id for r in result.accepted] == [early["record_id"]]
    assert [(r.record_id, r.reason) for r in result.refused] == [(late["record_id"], "fenced")]
