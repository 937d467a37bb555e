"""Summarise a session's usage records. Pure: records in, numbers out.

Each upstream call, retries included, is its own record, so sums never double-count.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

TOKEN_KINDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summarise(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    records = list(records)
    tokens = {kind: sum(r.get(kind) or 0 for r in records) for kind in TOKEN_KINDS}
    latencies = [r["latency_ms"] for r in records if r.get("latency_ms") is not None]
    ttfbs = [r["ttfb_ms"] for r in records if r.get("ttfb_ms") is not None]
    errors = Counter(r["error_type"] for r in records if r.get("error_type"))
    return {
        "calls": len(records),
        "complete_calls": sum(1 for r in records if r.get("complete")),
        "incomplete_calls": sum(1 for r in records if not r.get("complete")),
        "tokens": tokens,
        "models": dict(
            Counter(
                r["model_served"] or r["model_requested"] or "unknown"
                for r in records
                if r["endpoint"] == "/v1/messages"
            )
        ),
        "endpoints": dict(Counter(r["endpoint"] for r in records)),
        "statuses": {str(k): v for k, v in Counter(r.get("http_status") for r in records).items()},
        "errors": dict(errors),
        "latency_ms": {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95)},
        "ttfb_ms": {"p50": percentile(ttfbs, 50), "p95": percentile(ttfbs, 95)},
    }
