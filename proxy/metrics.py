"""The proxy's Prometheus metrics, for its one session.

Each finished call's usage record is counted into plain dicts and lists (a few dictionary
updates per call); prometheus_client turns them into its exposition format only when
/metrics is scraped, through a custom collector. It is imported then, not before: a proxy
whose metrics are not served (the sandbox launcher's) never loads it, which saves each
proxy 4 MB and 30 ms of start-up. No label carries a token, a key or a prompt: endpoint
templates, status codes and token kinds only.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from core.usage import UsageRecord

if TYPE_CHECKING:
    from prometheus_client.core import Metric

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_TOKEN_FIELDS = {
    "input": "input_tokens",
    "output": "output_tokens",
    "cache_creation": "cache_creation_input_tokens",
    "cache_read": "cache_read_input_tokens",
}


class _Histogram:
    __slots__ = ("buckets", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self.buckets, strict=True):
            total += count
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
        return out


def _histogram(table: dict[str, _Histogram], endpoint: str) -> _Histogram:
    histogram = table.get(endpoint)
    if histogram is None:
        histogram = table[endpoint] = _Histogram()
    return histogram


class ProxyMetrics:
    def __init__(
        self,
        *,
        unsent: Callable[[], int] = lambda: 0,
        key_armed: Callable[[], bool] = lambda: False,
        in_flight: Callable[[], int] = lambda: 0,
    ) -> None:
        self.calls: dict[tuple[str, str, str], int] = {}
        self.latency: dict[str, _Histogram] = {}
        self.ttfb: dict[str, _Histogram] = {}
        self.tokens = dict.fromkeys(_TOKEN_FIELDS, 0)
        self.published = 0
        self.key_reflected = 0
        self._unsent = unsent
        self._key_armed = key_armed
        self._in_flight = in_flight
        self._registry: Any = None

    def observe(self, record: UsageRecord) -> None:
        endpoint = record.endpoint if record.endpoint.startswith("/v1/") else "other"
        key = (endpoint, str(record.http_status), "true" if record.complete else "false")
        self.calls[key] = self.calls.get(key, 0) + 1
        if record.latency_ms is not None:
            _histogram(self.latency, endpoint).observe(record.latency_ms / 1000)
        if record.ttfb_ms is not None:
            _histogram(self.ttfb, endpoint).observe(record.ttfb_ms / 1000)
        tokens = self.tokens
        for kind, field in _TOKEN_FIELDS.items():
            value = getattr(record, field)
            if value:
                tokens[kind] += value
        self.published += 1
        if record.key_reflected:
            self.key_reflected += 1

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        calls = CounterMetricFamily(
            "metrux_proxy_upstream_calls",
            "Upstream calls by endpoint, HTTP status and completeness",
            labels=["endpoint", "status", "complete"],
        )
        for labels, count in self.calls.items():
            calls.add_metric(list(labels), count)
        yield calls
        for name, text, table in (
            (
                "metrux_proxy_upstream_latency_seconds",
                "Time from receiving a call to its last response byte",
                self.latency,
            ),
            (
                "metrux_proxy_upstream_ttfb_seconds",
                "Time to the first response byte from the upstream",
                self.ttfb,
            ),
        ):
            family = HistogramMetricFamily(name, text, labels=["endpoint"])
            for endpoint, histogram in table.items():
                family.add_metric([endpoint], histogram.cumulative(), histogram.sum)
            yield family
        tokens = CounterMetricFamily(
            "metrux_proxy_tokens", "Tokens by kind, as Anthropic counted them", labels=["kind"]
        )
        for kind, count in self.tokens.items():
            if count:
                tokens.add_metric([kind], count)
        yield tokens
        yield CounterMetricFamily(
            "metrux_proxy_records", "Usage records handed to the publisher", value=self.published
        )
        yield CounterMetricFamily(
            "metrux_proxy_key_reflected",
            "Upstream answers that held the key, overwritten before the sandbox saw them",
            value=self.key_reflected,
        )
        for name, text, read in (
            ("metrux_proxy_records_unsent",
             "Usage records not yet accepted by the control plane", self._unsent),
            ("metrux_proxy_calls_in_flight",
             "Calls being handled now; the proxy exits at 0", self._in_flight),
            ("metrux_proxy_key_armed",
             "1 while the session's key is held, 0 once cleared", self._key_armed),
        ):  # fmt: skip
            yield GaugeMetricFamily(name, text, value=float(read()))

    def render(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest

        if self._registry is None:
            self._registry = CollectorRegistry(auto_describe=False)
            self._registry.register(self)
        return generate_latest(self._registry)
