"""Session evidence as plain functions: chain checks, transcript verification, the price
table's arithmetic and the report's counting."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from control.evidence.chain import check_chain, seal_matches, verify_transcript
from control.evidence.cli import read_transcript
from control.evidence.html import render_report
from control.evidence.report import build_report, calls_csv, merged_usage
from control.sessions.lifecycle import SessionState
from control.sessions.store import SessionRecord
from control.usage.prices import PriceTable, PriceTableError, split_usage
from core.transcript import genesis, next_link

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chain_of(session_id: str, calls: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    entries, previous = [], genesis(session_id)
    for seq, (request, response) in enumerate(calls, start=1):
        record_id = f"rec{seq}"
        link = next_link(previous, sha(request), sha(response), record_id)
        entries.append(
            {
                "seq": seq,
                "record_id": record_id,
                "request_sha256": sha(request),
                "response_sha256": sha(response),
                "prev": previous,
                "link": link,
            }
        )
        previous = link
    return entries


CALLS = [
    (f'{{"n":{n}}}'.encode(), f"event: message_stop\ndata: {n}\n\n".encode()) for n in range(4)
]


def test_an_intact_chain_checks_out_and_a_broken_one_says_where() -> None:
    entries = chain_of("s", CALLS)
    check = check_chain("s", entries)
    assert (check.intact, check.calls, check.final_link) == (True, 4, entries[-1]["link"])

    tampered = [dict(e) for e in entries]
    tampered[1]["response_sha256"] = sha(b"something else")
    assert check_chain("s", tampered).problems == ["call 2: its link does not verify"]

    gap = [entries[0], *entries[2:]]
    problems = check_chain("s", gap).problems
    assert problems[0] == "calls 2 to 2 are missing (never recorded)"
    assert check_chain("other-session", entries).problems[0].startswith("call 1:")


def test_a_faithful_transcript_verifies_and_a_tampered_one_is_pinpointed() -> None:
    digest = {"session_id": "s", "entries": chain_of("s", CALLS), "seal": None}
    assert verify_transcript(digest, CALLS).ok

    edited = list(CALLS)
    edited[2] = (CALLS[2][0], CALLS[2][1].replace(b"2", b"9"))
    edited[3] = (b'{"n":"x"}', CALLS[3][1])
    check = verify_transcript(digest, edited)
    assert not check.ok
    assert check.first_mismatch == 3
    assert [(v.request_matches, v.response_matches) for v in check.verdicts] == [
        (True, True),
        (True, True),
        (True, False),
        (False, True),
    ]
    short = verify_transcript(digest, CALLS[:3])
    assert (short.ok, short.missing) == (False, 1)


def test_the_seal_covers_the_calls_it_counted() -> None:
    entries = chain_of("s", CALLS)
    assert seal_matches("s", entries, None) is None
    assert seal_matches("s", entries, {"calls": 3, "final_link": entries[2]["link"]}) is True
    assert seal_matches("s", entries, {"calls": 4, "final_link": entries[2]["link"]}) is False
    assert seal_matches("s", [], {"calls": 0, "final_link": genesis("s")}) is True


def test_transcript_lines_take_text_or_base64_and_refuse_parsed_bodies(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(
        json.dumps({"request": '{"a": 1}', "response": "ok"})
        + "\n\n"
        + json.dumps({"request_b64": "AAE=", "response": ""})
        + "\n"
    )
    assert read_transcript(path) == [(b'{"a": 1}', b"ok"), (b"\x00\x01", b"")]
    path.write_text(json.dumps({"request": {"a": 1}, "response": "ok"}) + "\n")
    with pytest.raises(ValueError, match=r"t\.jsonl:1: request must be the body text"):
        read_transcript(path)


# --- prices --------------------------------------------------------------------------------

TABLE = PriceTable.from_json(
    {
        "version": "test-1",
        "models": {
            "claude-sonnet": {
                "input": "3",
                "output": "15",
                "cache_write_5m": "3.75",
                "cache_write_1h": "6",
                "cache_read": "0.30",
            },
            "claude-sonnet-9": {
                "input": "1",
                "output": "1",
                "cache_write_5m": "1",
                "cache_write_1h": "1",
                "cache_read": "1",
            },
        },
    }
)


def test_cost_prices_every_kind_of_token_exactly() -> None:
    usage = {
        "input_tokens": 1000,
        "output_tokens": 2000,
        "cache_creation_input_tokens": 300,
        "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200},
        "cache_read_input_tokens": 5000,
        "service_tier": "standard",
    }
    cost = TABLE.cost("claude-sonnet-5-5", usage)
    assert cost is not None
    # 1000 x 3 + 2000 x 15 + 100 x 3.75 + 200 x 6 + 5000 x 0.30, per million
    assert cost.total == Decimal("0.036075")
    assert cost.by_kind["cache_write_1h"] == Decimal("0.0012")
    assert cost.priced_as == "claude-sonnet"


def test_cache_writes_without_a_split_are_priced_as_five_minute_writes() -> None:
    assert split_usage({"cache_creation_input_tokens": 40, "input_tokens": 1}) == {
        "input": 1,
        "output": 0,
        "cache_write_5m": 40,
        "cache_write_1h": 0,
        "cache_read": 0,
    }


def test_the_longest_prefix_wins_and_unknown_models_stay_unpriced() -> None:
    usage = {"input_tokens": 1_000_000}
    assert TABLE.cost("claude-sonnet-9-20990101", usage).total == Decimal(1)  # type: ignore[union-attr]
    assert TABLE.cost("claude-sonnet-4", usage).total == Decimal(3)  # type: ignore[union-attr]
    assert TABLE.cost("gpt-5", usage) is None
    assert TABLE.cost(None, usage) is None


def test_the_shipped_table_loads_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    shipped = PriceTable.load()
    assert shipped.version
    assert shipped.price_for("claude-haiku-4-5-20251001") is not None
    bad = tmp_path / "prices.json"
    bad.write_text(json.dumps({"version": "x", "models": {"m": {"input": "1"}}}))
    with pytest.raises(PriceTableError):
        PriceTable.load(bad)


# --- the report ------------------------------------------------------------------------------


def session() -> SessionRecord:
    return SessionRecord(
        id="s",
        tenant_id="t",
        candidate_id="c",
        api_key_id="k",
        state=SessionState.ENDED,
        deadline_at=NOW,
        max_requests=None,
        max_output_tokens=None,
        allowed_models=None,
        allowed_betas=None,
        created_at=NOW,
        updated_at=NOW,
        ended_at=NOW,
    )


def record(n: int, **fields: Any) -> dict[str, Any]:
    base = {
        "record_id": f"rec{n}",
        "started_at": NOW + dt.timedelta(seconds=n),
        "actor": "candidate",
        "endpoint": "/v1/messages",
        "model_served": "claude-sonnet-5-5",
        "stream": False,
        "http_status": 200,
        "complete": True,
        "error_type": None,
        "usage": {"input_tokens": 100, "output_tokens": 10},
        "latency_ms": 120.0,
        "ttfb_ms": 50.0,
        "request_sha256": sha(f"req{n}".encode()),
        "chain_seq": n,
    }
    return {**base, **fields}


def test_a_retry_and_a_cut_stream_are_each_one_call_and_nothing_is_counted_twice() -> None:
    failed = record(
        1, http_status=529, error_type="overloaded_error", usage=None, request_sha256="a" * 64
    )
    retried = record(2, request_sha256="a" * 64)
    cut = record(
        3,
        stream=True,
        complete=False,
        error_type="upstream_cut",
        usage={"message_start": {"input_tokens": 50, "output_tokens": 1}},
    )
    report = build_report(session(), [failed, retried, cut], [], [], TABLE)
    assert [c["retry"] for c in report["calls"]] == [False, True, False]
    totals = report["totals"]
    assert (totals["calls"], totals["errors"], totals["retries"], totals["incomplete"]) == (
        3,
        2,
        1,
        1,
    )
    assert totals["tokens"]["input"] == 150  # the retry's 100 and the cut's 50, once each
    assert totals["tokens"]["output"] == 11
    assert [c["cumulative_tokens"] for c in report["calls"]] == [0, 110, 161]
    assert report["totals"]["cost"] == "0.000615"  # 150 x 3 + 11 x 15 per million
    html = render_report(report)
    assert html.count('<tr class="call') == 3
    assert 'id="usage-chart"' in html
    assert "<script" not in html
    csv_text = calls_csv(report)
    assert csv_text.splitlines()[0].startswith("n,started_at,actor")
    assert len(csv_text.splitlines()) == 4


def test_a_streams_usage_is_its_start_updated_by_its_last_delta() -> None:
    usage = {
        "message_start": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 5},
        "message_delta": {"output_tokens": 12, "input_tokens": None},
    }
    assert merged_usage(usage) == {
        "input_tokens": 25,
        "output_tokens": 12,
        "cache_read_input_tokens": 5,
    }
    assert merged_usage({"input_tokens": 3}) == {"input_tokens": 3}
    assert merged_usage(None) is None
