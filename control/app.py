"""The control-plane application factory: one cleanup context per resource."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import structlog
from aiohttp import web
from redis.asyncio import BlockingConnectionPool, Redis

from control import appkeys
from control.audit.access import AccessLog
from control.audit.archive import archive_for
from control.audit.views import routes as audit_routes
from control.candidates.views import routes as candidate_routes
from control.console.middleware import console_middleware
from control.console.routes import install as install_console
from control.db.engine import create_engine
from control.email.sender import make_sender
from control.evidence.views import routes as evidence_routes
from control.guard.blocklist import Blocklist, BlockPolicy
from control.guard.middleware import guard_middleware
from control.identity.middleware import auth_middleware
from control.identity.views import install_verifier
from control.identity.views import routes as identity_routes
from control.invites.views import routes as invite_routes
from control.keys.monitor import KeyMonitor
from control.keys.validation import ProcessKeyChecker
from control.keys.views import routes as key_routes
from control.members.views import routes as member_routes
from control.ops.metrics import ControlMetrics
from control.ops.middleware import metrics_middleware
from control.ops.views import routes as ops_routes
from control.retention.worker import RetentionWorker
from control.sessions.proxy_link import routes as proxy_link_routes
from control.sessions.revocation import RevokeSessionsOfKey
from control.sessions.signals import SignalHub, SignalPublisher
from control.sessions.views import routes as session_routes
from control.usage.prices import PriceTable
from control.usage.views import routes as usage_routes
from control.web import received
from control.web.context import request_context_middleware
from control.web.errors import error_middleware
from control.web.headers import security_headers_middleware
from control.workers import start_workers, stop_workers
from core.crypto.kek import load_kek
from core.ratelimit import RateLimiter
from core.redis_names import RedisNames
from core.redis_server import redis_url
from core.settings import Settings
from core.tasks import spawn

# Control-plane bodies are small JSON documents; anything larger is refused with 413.
MAX_BODY_BYTES = 64 * 1024
HUB_STOP_TIMEOUT_S = 5.0
log = structlog.get_logger(__name__)


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    engine = create_engine(app[appkeys.settings].effective_database_url)
    app[appkeys.engine] = engine
    app[appkeys.email] = make_sender(app[appkeys.settings], engine)
    yield
    await engine.dispose()


async def access_log_ctx(app: web.Application) -> AsyncIterator[None]:
    """Access rows, written in batches off the request path (control/audit/access.py)."""
    access_log = AccessLog(app[appkeys.engine])
    app[appkeys.access_log] = access_log
    access_log.start()
    yield
    await access_log.close()


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.settings]
    url = await asyncio.to_thread(redis_url, settings)
    # A blocking pool: under a burst of requests, callers wait for a free connection
    # instead of failing (redis-py's default pool raises past 100 connections).
    pool = BlockingConnectionPool.from_url(
        url, max_connections=100, timeout=5, socket_timeout=5, socket_connect_timeout=5
    )
    client = Redis(connection_pool=pool)
    app[appkeys.redis] = client
    app[appkeys.names] = RedisNames(settings.redis_prefix)
    app[appkeys.signals] = SignalPublisher(client, app[appkeys.names])
    app[appkeys.key_revocation] = RevokeSessionsOfKey(app[appkeys.signals])
    app[appkeys.limiter] = RateLimiter(client)
    app[appkeys.blocklist] = Blocklist(
        client, app[appkeys.names], app[appkeys.engine], BlockPolicy.from_settings(settings)
    )
    yield
    await client.aclose()


async def signal_hub_ctx(app: web.Application) -> AsyncIterator[None]:
    """The process's one pub/sub subscription, fanned out to the proxies' signal streams."""
    hub = SignalHub(app[appkeys.redis], app[appkeys.names])
    app[appkeys.hub] = hub
    task = spawn(hub.run(), name="signal-hub")
    yield
    hub.stop()
    task.cancel()
    _, pending = await asyncio.wait([task], timeout=HUB_STOP_TIMEOUT_S)
    if pending:
        log.error("signal_hub_did_not_stop")


async def end_signal_streams(app: web.Application) -> None:
    # Before aiohttp waits for handlers: the streams end now and their proxies reconnect
    # to another replica (or to this one once it is back).
    app[appkeys.hub].close()


async def keys_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.settings]
    app[appkeys.kek] = load_kek(settings)
    app[appkeys.key_checker] = ProcessKeyChecker(
        settings.upstream_url, settings.key_check_timeout_s
    )
    app[appkeys.key_monitor] = KeyMonitor(
        app[appkeys.engine], app[appkeys.kek], app[appkeys.key_checker], app[appkeys.email]
    )
    yield


async def workers_ctx(app: web.Application) -> AsyncIterator[None]:
    """Run the background workers in this process (`metrux control serve` does by default)."""
    app[appkeys.workers] = start_workers(
        app[appkeys.redis],
        app[appkeys.engine],
        app[appkeys.names],
        app[appkeys.key_monitor],
        RetentionWorker(
            app[appkeys.engine],
            app[appkeys.email],
            audit_archive=archive_for(app[appkeys.settings]),
            audit_retention_days=app[appkeys.settings].audit_retention_days,
        ),
        app[appkeys.metrics],
    )
    yield
    await stop_workers(app[appkeys.workers])


def create_app(settings: Settings, *, workers: bool = False) -> web.Application:
    received.install()  # raw reads zeroed after parsing: no key upload outlives its request
    app = web.Application(
        middlewares=[
            request_context_middleware,
            security_headers_middleware,
            metrics_middleware,
            error_middleware,
            console_middleware,
            guard_middleware,
            auth_middleware,
        ],
        client_max_size=MAX_BODY_BYTES,
    )
    app[appkeys.settings] = settings
    app[appkeys.prices] = PriceTable.load(settings.prices_file)
    app[appkeys.metrics] = ControlMetrics()
    install_verifier(app)
    app.cleanup_ctx.extend([database_ctx, access_log_ctx, redis_ctx, signal_hub_ctx, keys_ctx])
    app.on_shutdown.append(end_signal_streams)
    if workers:
        app.cleanup_ctx.append(workers_ctx)
    for routes in (
        ops_routes,
        key_routes,
        member_routes,
        invite_routes,
        session_routes,
        proxy_link_routes,
        usage_routes,
        audit_routes,
        candidate_routes,
        evidence_routes,
        identity_routes,
    ):
        app.add_routes(routes)
    install_console(app)
    return app
