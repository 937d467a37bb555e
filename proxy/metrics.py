"""The proxy's Prometheus metrics, one registry per process (its one session).

Updated from the usage record of each finished call, so metering and metrics agree and the
hot path pays one dictionary walk per call. No label carries a token, a key or a prompt:
endpoint templates, status codes and token kinds only.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from core.usage import UsageRecord

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_TOKEN_FIELDS = {
    "input": "input_tokens",
    "output": "output_tokens",
    "cache_creation": "cache_creation_input_tokens",
    "cache_read": "cache_read_input_tokens",
}


class ProxyMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.calls = Counter(
            "metrux_proxy_upstream_calls",
            "Upstream calls by endpoint, HTTP status and completeness",
            ["endpoint", "status", "complete"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "metrux_proxy_upstream_latency_seconds",
            "Time from receiving a call to its last response byte",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttfb = Histogram(
            "metrux_proxy_upstream_ttfb_seconds",
            "Time to the first response byte from the upstream",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "metrux_proxy_tokens", "Tokens by kind, as Anthropic counted them", ["kind"],
            registry=self.registry,
        )  # fmt: skip
        self.published = Counter(
            "metrux_proxy_records", "Usage records handed to the publisher",
            registry=self.registry,
        )  # fmt: skip
        self.unsent = Gauge(
            "metrux_proxy_records_unsent", "Usage records not yet accepted by the control plane",
            registry=self.registry,
        )  # fmt: skip
        self.in_flight = Gauge(
            "metrux_proxy_calls_in_flight", "Calls being handled now; the proxy exits at 0",
            registry=self.registry,
        )  # fmt: skip
        self.key_armed = Gauge(
            "metrux_proxy_key_armed", "1 while the session's key is held, 0 once cleared",
            registry=self.registry,
        )  # fmt: skip

    def observe(self, record: UsageRecord) -> None:
        endpoint = record.endpoint if record.endpoint.startswith("/v1/") else "other"
        self.calls.labels(endpoint, str(record.http_status), str(record.complete).lower()).inc()
        if record.latency_ms is not None:
            self.latency.labels(endpoint).observe(record.latency_ms / 1000)
        if record.ttfb_ms is not None:
            self.ttfb.labels(endpoint).observe(record.ttfb_ms / 1000)
        for kind, field in _TOKEN_FIELDS.items():
            value = getattr(record, field)
            if value:
                self.tokens.labels(kind).inc(value)
        self.published.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
