"""The control plane's Prometheus metrics: HTTP requests by route template and status, the
usage pipeline, sessions by state and keys by status.

Each app has its own registry (tests build many apps in one process). Gauges that describe
shared state (sessions, keys, the usage stream's backlog) are read from the database and
Redis when Prometheus scrapes (control/ops/scrape.py), so every replica reports the same
truth. No label holds an id, a token or an email: route templates, methods, statuses and
states only. This module holds only the collectors: it imports nothing of the app, so any
module may import it (control/ops/middleware.py counts the requests).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from control.keys.health import KeyStatus
from control.sessions.lifecycle import SessionState

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class ControlMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "metrux_http_requests", "HTTP requests by route, method and status",
            ["route", "method", "status"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "metrux_http_request_duration_seconds", "HTTP request latency by route",
            ["route", "method"], buckets=_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.ingested = Counter(
            "metrux_usage_records_ingested", "Usage records stored by this process's ingester",
            registry=self.registry,
        )  # fmt: skip
        self.records_received = Counter(
            "metrux_usage_records_received",
            "Usage records accepted from proxies onto the ingest stream",
            registry=self.registry,
        )
        self.records_refused = Counter(
            "metrux_usage_records_refused",
            "Usage records refused at intake: invalid, or naming another session than the "
            "proxy credential's (wrong_session: alert on any)",
            ["reason"], registry=self.registry,
        )  # fmt: skip
        self.dead_letters = Counter(
            "metrux_usage_dead_letters",
            "Usage records the ingester could not store, kept in the dead-letter table, by "
            "reason (invalid, unreadable, unknown_session, refused_by_database); alert on any",
            ["reason"], registry=self.registry,
        )  # fmt: skip
        self.key_reflected = Counter(
            "metrux_key_reflected",
            "Upstream answers that held a customer key, scrubbed by the proxy (audited as "
            "key:reflected); alert on any",
            registry=self.registry,
        )
        self.worker_restarts = Counter(
            "metrux_worker_restarts", "Background workers restarted after a crash, by worker",
            ["worker"], registry=self.registry,
        )  # fmt: skip
        self.backlog = Gauge(
            "metrux_usage_records_backlog",
            "Usage records on the stream not yet stored (read at scrape)",
            registry=self.registry,
        )
        self.sessions = Gauge(
            "metrux_sessions", "Sessions by state (read at scrape)", ["state"],
            registry=self.registry,
        )  # fmt: skip
        self.rate_limited = Counter(
            "metrux_rate_limited", "Requests refused with 429, by route class", ["route_class"],
            registry=self.registry,
        )  # fmt: skip
        self.limiter_unavailable = Counter(
            "metrux_rate_limiter_unavailable",
            "Requests the limiter could not check (Redis down or slow); alert on any",
            registry=self.registry,
        )
        self.blocks = Counter(
            "metrux_ip_blocks", "Addresses blocked by the brute-force detector",
            registry=self.registry,
        )  # fmt: skip
        self.keys = Gauge(
            "metrux_customer_keys", "Customer keys by status (read at scrape)", ["status"],
            registry=self.registry,
        )  # fmt: skip

    def set_counts(self, sessions_by_state: dict[str, int], keys_by_status: dict[str, int]) -> None:
        for state in (s.value for s in SessionState):
            self.sessions.labels(state).set(sessions_by_state.get(state, 0))
        for status in (k.value for k in KeyStatus):
            self.keys.labels(status).set(keys_by_status.get(status, 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
