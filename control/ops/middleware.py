"""Counting every HTTP request by route template, method and status, and its latency."""

from __future__ import annotations

import time

from aiohttp import web

from control import appkeys
from control.web.errors import Handler

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


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
