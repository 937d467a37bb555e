"""The control plane's Prometheus metrics: HTTP requests by route template and status, the
usage pipeline, sessions by state and keys by status.

Each app has its own registry (tests build many apps in one process). Gauges that describe
shared state (sessions, keys, the usage stream's backlog) are read from the database and
Redis when Prometheus scrapes, so every replica reports the same truth. No label holds an
id, a token or an email: route templates, methods, statuses and states only.
"""

from __future__ import annotations

import contextlib
import time

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from control import appkeys
from control.db.schema import KEY_STATUSES, SESSION_STATES, api_keys, sessions
from control.web.errors import Handler

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
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

    async def refresh(self, app: web.Application) -> None:
        try:
            async with app[appkeys.engine].connect() as conn:
                by_state = dict(
                    (await conn.execute(
                        select(sessions.c.state, func.count()).group_by(sessions.c.state)
                    )).all()
                )  # fmt: skip
                by_status = dict(
                    (await conn.execute(
                        select(api_keys.c.status, func.count()).group_by(api_keys.c.status)
                    )).all()
                )  # fmt: skip
            for state in SESSION_STATES:
                self.sessions.labels(state).set(by_state.get(state, 0))
            for status in KEY_STATUSES:
                self.keys.labels(status).set(by_status.get(status, 0))
        except SQLAlchemyError:
            pass  # /readyz reports the database; the gauges keep their last values
        with contextlib.suppress(RedisError, OSError):  # /readyz reports Redis
            self.backlog.set(await app[appkeys.redis].xlen(app[appkeys.names].usage_stream))

    def render(self) -> bytes:
        return generate_latest(self.registry)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        # Labels come from a closed set: a client-chosen method or path never becomes one
        # (no secret in a label, no unbounded series).
        method = request.method if request.method in _METHODS else "OTHER"
        metrics = request.app[appkeys.metrics]
        metrics.requests.labels(route, method, str(status)).inc()
        metrics.latency.labels(route, method).observe(time.perf_counter() - started)
