"""The proxy application factory: one attached session, and every resource it runs."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from core.settings import Settings
from core.tasks import spawn
from proxy import appkeys
from proxy.attach import Grant
from proxy.control_link import ControlLink
from proxy.errors import ProxyError
from proxy.keepalive import KeepaliveWatchdog
from proxy.keyring import SessionKey
from proxy.metrics import ProxyMetrics
from proxy.publisher import UsagePublisher
from proxy.routes import fallback, routes
from proxy.session import ProxySession
from proxy.signals import ControlGrace, SignalWatcher

log = structlog.get_logger(__name__)
FLUSH_TIMEOUT_S = 15.0  # longer than one batch's request timeout

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
    """One upstream client for the process. auto_decompress off and no automatic headers:
    bytes and headers go through as the upstream and the client sent them."""
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Content-Type", "Accept"),
        trust_env=False,
    ) as client:
        app[appkeys.http] = client
        yield


async def control_link_ctx(app: web.Application) -> AsyncIterator[None]:
    link = app[appkeys.link]
    await link.open()
    yield
    await link.close()


async def publisher_ctx(app: web.Application) -> AsyncIterator[None]:
    """Records go out in the background; at shutdown, what is left is flushed first."""
    publisher = app[appkeys.publisher]
    task = spawn(publisher.run(), name="usage-publisher")
    yield
    if not await publisher.flush(FLUSH_TIMEOUT_S):
        log.error("usage_records_unsent", unsent=publisher.pending)
    await _stop(task)


async def signals_ctx(app: web.Application) -> AsyncIterator[None]:
    watcher = SignalWatcher(app[appkeys.link], app[appkeys.session])
    app[appkeys.signals] = watcher
    task = spawn(watcher.run(), name="signal-stream")
    yield
    await _stop(task)


async def watchdogs_ctx(app: web.Application) -> AsyncIterator[None]:
    """The deadline, the control plane's grace period and the launcher's keepalive: each
    clears the key when it runs out."""
    session = app[appkeys.session]
    loop = asyncio.get_running_loop()
    seconds_left = (session.info.deadline_at - dt.datetime.now(dt.UTC)).total_seconds()
    deadline = loop.call_later(max(seconds_left, 0), session.clear, "deadline")
    settings = app[appkeys.settings]
    grace = ControlGrace(
        app[appkeys.link], settings.proxy_control_grace_s, session.clear, loop.time
    )
    tasks = [spawn(grace.watch(), name="control-grace")]
    watchdog = app.get(appkeys.watchdog)
    if watchdog is not None:
        tasks.append(spawn(watchdog.watch(), name="keepalive-watchdog"))
    yield
    deadline.cancel()
    for task in tasks:
        await _stop(task)


async def _stop(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def create_app(
    settings: Settings,
    grant: Grant,
    key: SessionKey,
    *,
    control_url: str,
    upstream_url: str | None = None,
    keepalive_grace: float = 0.0,
) -> web.Application:
    """The proxy for one attached session. Each resource it runs (upstream client, control
    link, publisher, signal stream, watchdogs) is a cleanup context: started with the app,
    stopped in reverse order when it stops, records flushed before the link closes."""
    info = grant.info
    session = ProxySession(
        info, key, rate_per_s=settings.proxy_rate_per_s, burst=settings.proxy_burst
    )
    link = ControlLink(control_url, info.session_id, grant.credential)
    publisher = UsagePublisher(link.post_records, on_refused=session.clear)
    app = web.Application(
        middlewares=[error_middleware], client_max_size=settings.proxy_max_body_bytes
    )
    app[appkeys.settings] = settings
    app[appkeys.session] = session
    app[appkeys.link] = link
    app[appkeys.publisher] = publisher
    app[appkeys.upstream_url] = (upstream_url or settings.upstream_url).rstrip("/")
    metrics = ProxyMetrics()
    metrics.unsent.set_function(lambda: publisher.pending)
    metrics.key_armed.set_function(lambda: 1 if session.key.armed else 0)
    metrics.in_flight.set_function(lambda: session.in_flight)
    app[appkeys.metrics] = metrics
    if keepalive_grace > 0:
        app[appkeys.watchdog] = KeepaliveWatchdog(keepalive_grace, session.clear)
    app.cleanup_ctx.extend([http_ctx, control_link_ctx, publisher_ctx, signals_ctx, watchdogs_ctx])
    app.add_routes(routes)
    app.router.add_route("*", "/{tail:.*}", fallback)
    return app
