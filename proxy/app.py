"""The proxy application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import structlog
from aiohttp import web

from proxy import appkeys
from proxy.errors import ProxyError
from proxy.keepalive import KeepaliveWatchdog
from proxy.metrics import ProxyMetrics
from proxy.publisher import UsagePublisher
from proxy.routes import fallback, routes
from proxy.secret_memory import install_header_block_wiping
from proxy.session import ProxySession

log = structlog.get_logger(__name__)

_HTTP_ERRORS = {
    400: "invalid_request_error",
    404: "not_found_error",
    405: "not_found_error",
    413: "request_too_large",
}


@web.middleware
async def error_middleware(request: web.Request, handler: object) -> web.StreamResponse:
    session = request.app[appkeys.session]
    session.call_started()
    try:
        return await handler(request)  # type: ignore[operator]
    except ProxyError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = (
            "request body is too large"
            if exc.status == 413
            else f"{request.method} {request.path}: {exc.reason}"
        )
        return ProxyError(
            exc.status, _HTTP_ERRORS.get(exc.status, "invalid_request_error"), message
        ).response()
    except Exception:
        log.exception("proxy_unhandled_error", path=request.path)
        return ProxyError(500, "api_error", "internal proxy error").response()
    finally:
        session.call_finished()


async def http_ctx(app: web.Application) -> AsyncIterator[None]:
    # One client session for the process. auto_decompress off and no automatic headers:
    # bytes and headers go through as the upstream and the client sent them.
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Content-Type", "Accept"),
        trust_env=False,
    ) as client:
        app[appkeys.http] = client
        yield


def create_app(
    session: ProxySession,
    publisher: UsagePublisher,
    *,
    upstream_url: str,
    max_body_bytes: int,
    watchdog: KeepaliveWatchdog | None = None,
) -> web.Application:
    install_header_block_wiping()
    app = web.Application(middlewares=[error_middleware], client_max_size=max_body_bytes)
    app[appkeys.session] = session
    app[appkeys.publisher] = publisher
    app[appkeys.upstream_url] = upstream_url.rstrip("/")
    metrics = ProxyMetrics()
    metrics.unsent.set_function(lambda: publisher.pending)
    metrics.key_armed.set_function(lambda: 1 if session.key.armed else 0)
    metrics.in_flight.set_function(lambda: session.in_flight)
    app[appkeys.metrics] = metrics
    if watchdog is not None:
        app[appkeys.watchdog] = watchdog
    app.cleanup_ctx.append(http_ctx)
    app.add_routes(routes)
    app.router.add_route("*", "/{tail:.*}", fallback)
    return app
