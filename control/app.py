"""The control-plane application factory: one cleanup context per resource."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web
from redis.asyncio import Redis

from control import appkeys
from control.audit.views import routes as audit_routes
from control.db.engine import create_engine
from control.keys.views import routes as key_routes
from control.members.views import routes as member_routes
from control.ops.views import routes as ops_routes
from control.web.auth import auth_middleware
from control.web.context import request_context_middleware
from control.web.errors import error_middleware
from core.crypto.kek import load_kek
from core.redis_server import redis_url
from core.settings import Settings

# Control-plane bodies are small JSON documents; anything larger is refused with 413.
MAX_BODY_BYTES = 64 * 1024


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    engine = create_engine(app[appkeys.settings].effective_database_url)
    app[appkeys.engine] = engine
    yield
    await engine.dispose()


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    url = await asyncio.to_thread(redis_url, app[appkeys.settings])
    client = Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    app[appkeys.redis] = client
    yield
    await client.aclose()


async def kek_ctx(app: web.Application) -> AsyncIterator[None]:
    app[appkeys.kek] = load_kek(app[appkeys.settings])
    yield


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[request_context_middleware, error_middleware, auth_middleware],
        client_max_size=MAX_BODY_BYTES,
    )
    app[appkeys.settings] = settings
    app.cleanup_ctx.extend([database_ctx, redis_ctx, kek_ctx])
    for routes in (ops_routes, key_routes, member_routes, audit_routes):
        app.add_routes(routes)
    return app
