"""A session's report: facts, a timeline of calls, cumulative tokens and cost, the digest
chain and its seal, and the key events from the audit log. Pure: data in, data out.

Each usage record is one upstream call, so nothing is counted twice: a retry is its own
call (marked `retry` when it re-sends the exact request bytes of an earlier failed call),
a cut stream is its own call with `complete: false` and the tokens seen before the cut.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from control.audit.store import AuditEvent
from control.evidence.chain import check_chain, seal_matches
from control.sessions.store import SessionRecord
from control.usage.prices import PriceTable, split_usage
from core.transcript import genesis

KEY_EVENTS = frozenset(
    {
        "session:create",
        "key:unwrap",
        "session:submit",
        "session:end",
        "session:expire",
        "session:revoke",
        "session:grading_complete",
        "session:seal",
        "session:reconnect",
    }
)
# The proxy clears the key on these; the report says so next to them.
CLEARS_KEY = frozenset(
    {"session:end", "session:expire", "session:revoke", "session:grading_complete"}
)
TOKEN_KINDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")


def merged_usage(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """One usage object per call: a stream's message_start usage updated by its last
    message_delta (whose counts are cumulative), a JSON reply's usage as it came."""
    if not usage:
        return None
    if "message_start" in usage or "message_delta" in usage:
        merged = dict(usage.get("message_start") or {})
        merged.update(
            {k: v for k, v in (usage.get("message_delta") or {}).items() if v is not None}
        )
        return merged
    return usage


def _money(value: Decimal | None) -> str | None:
    return None if value is None else f"{value.quantize(Decimal('0.000001'))}"


def build_report(
    session: SessionRecord,
    records: Sequence[dict[str, Any]],
    events: Sequence[AuditEvent],
    chain_entries: Sequence[dict[str, Any]],
    prices: PriceTable,
) -> dict[str, Any]:
    calls: list[dict[str, Any]] = []
    totals = dict.fromkeys(TOKEN_KINDS, 0)
    cost_total = Decimal(0)
    cumulative_tokens = 0
    unpriced = errors = retries = incomplete = 0
    failed_requests: set[str] = set()
    for n, record in enumerate(records, start=1):
        usage = merged_usage(record.get("usage"))
        tokens = split_usage(usage) if usage else dict.fromkeys(TOKEN_KINDS, 0)
        model = record.get("model_served") or record.get("model_requested")
        cost = prices.cost(model, usage) if usage else None
        if usage and cost is None:
            unpriced += 1
        for kind in TOKEN_KINDS:
            totals[kind] += tokens[kind]
        cumulative_tokens += sum(tokens.values())
        if cost is not None:
            cost_total += cost.total
        ok = record.get("http_status") == 200 and record.get("complete")
        request_sha = record.get("request_sha256")
        retry = bool(request_sha) and request_sha in failed_requests
        errors += 0 if ok else 1
        retries += 1 if retry else 0
        incomplete += 0 if record.get("complete") else 1
        if not ok and request_sha:
            failed_requests.add(request_sha)
        calls.append(
            {
                "n": n,
                "record_id": record["record_id"],
                "started_at": record["started_at"].isoformat(),
                "actor": record.get("actor"),
                "endpoint": record.get("endpoint"),
                "model": model,
                "stream": record.get("stream"),
                "http_status": record.get("http_status"),
                "complete": bool(record.get("complete")),
                "error_type": record.get("error_type"),
                "retry": retry,
                "tokens": tokens,
                "latency_ms": record.get("latency_ms"),
                "ttfb_ms": record.get("ttfb_ms"),
                "cost": _money(cost.total) if cost else None,
                "priced_as": cost.priced_as if cost else None,
                "cumulative_tokens": cumulative_tokens,
                "cumulative_cost": _money(cost_total),
                "usage": record.get("usage"),  # Anthropic's object(s), exactly as received
                "chain_seq": record.get("chain_seq"),
            }
        )
    chain = check_chain(session.id, chain_entries)
    seal_event = next((e for e in reversed(events) if e.action == "session:seal"), None)
    seal = (
        {
            "at": seal_event.occurred_at.isoformat(),
            "calls": int(seal_event.details["calls"]),
            "final_link": seal_event.details["final_link"],
        }
        if seal_event
        else None
    )
    return {
        "session": {
            "id": session.id,
            "state": session.state.value,
            "candidate_id": session.candidate_id,
            "api_key_id": session.api_key_id,
            "created_at": session.created_at.isoformat(),
            "deadline_at": session.deadline_at.isoformat(),
            "ended_at": session.ended_at.isoformat() if session.ended_at else None,
        },
        "prices": {"version": prices.version, "currency": prices.currency},
        "totals": {
            "calls": len(calls),
            "errors": errors,
            "retries": retries,
            "incomplete": incomplete,
            "tokens": totals,
            "cost": _money(cost_total),
            "unpriced_calls": unpriced,
        },
        "calls": calls,
        "chain": {
            "genesis": genesis(session.id),
            "calls": chain.calls,
            "final_link": chain.final_link,
            "intact": chain.intact,
            "problems": chain.problems,
            "seal": seal,
            "seal_matches": seal_matches(session.id, chain_entries, seal),
        },
        "key_events": [
            {
                "at": e.occurred_at.isoformat(),
                "action": e.action,
                "outcome": e.outcome,
                "actor_type": e.actor_type,
                "clears_key": e.action in CLEARS_KEY,
            }
            for e in events
            if e.action in KEY_EVENTS
        ],
    }


def digest_document(
    session_id: str, entries: Sequence[dict[str, Any]], seal: dict[str, Any] | None
) -> dict[str, Any]:
    """What GET /v1/sessions/{id}/digest returns and `metrux verify-transcript` reads."""
    chain = check_chain(session_id, entries)
    return {
        "session_id": session_id,
        "genesis": genesis(session_id),
        "entries": [
            {
                "seq": e["seq"],
                "record_id": e["record_id"],
                "started_at": e["started_at"].isoformat(),
                "endpoint": e["endpoint"],
                "request_sha256": e["request_sha256"],
                "response_sha256": e["response_sha256"],
                "prev": e["prev"],
                "link": e["link"],
            }
            for e in entries
        ],
        "calls": chain.calls,
        "final_link": chain.final_link,
        "intact": chain.intact,
        "problems": chain.problems,
        "seal": seal,
        "seal_matches": seal_matches(session_id, entries, seal),
    }


CSV_COLUMNS = (
    "n",
    "started_at",
    "actor",
    "endpoint",
    "model",
    "stream",
    "http_status",
    "complete",
    "error_type",
    "retry",
    *(f"tokens_{kind}" for kind in TOKEN_KINDS),
    "latency_ms",
    "ttfb_ms",
    "cost",
    "cumulative_tokens",
    "cumulative_cost",
    "record_id",
    "chain_seq",
)


def calls_csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for call in report["calls"]:
        row = dict(call)
        row.update({f"tokens_{kind}": call["tokens"][kind] for kind in TOKEN_KINDS})
        writer.writerow(row)
    return out.getvalue()
