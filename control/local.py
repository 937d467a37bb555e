"""`metrux up`: the whole service on one machine, on its embedded defaults."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from core.logging import ACCESS_LOG_FORMAT
from core.settings import Settings


def register(parts: Any) -> None:
    cmd = parts.add_parser("up", help="run the control plane, ingester and embedded Redis here")
    cmd.add_argument("--host", default="127.0.0.1")
    cmd.add_argument("--port", type=int, default=8700)
    cmd.set_defaults(handler=run_up)


def run_up(args: argparse.Namespace, settings: Settings) -> int:
    from aiohttp import web

    from control.app import create_app
    from control.db import migrate
    from control.db.engine import create_engine
    from core.redis_server import ping, redis_url, stop_embedded_redis

    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    async def migrate_now() -> None:
        engine = create_engine(settings.effective_database_url)
        try:
            await migrate.upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(migrate_now())
    socket = settings.embedded_redis_socket
    started_redis = settings.redis_url is None and not ping(socket)
    redis = redis_url(settings)
    metrux = "metrux"
    print(
        "metrux is up\n"
        f"  control plane   http://{args.host}:{args.port}  (usage ingester inside)\n"
        f"  redis           {redis}{' (embedded)' if settings.redis_url is None else ''}\n"
        f"  database        {settings.effective_database_url}\n"
        f"  data directory  {settings.data_dir.resolve()}\n"
        f'create a tenant:  {metrux} control create-tenant "Acme" --owner-email you@example.com\n'
        f"see it work:      {metrux} demo --fake-upstream\n"
        f"open the console: {metrux} control login-link you@example.com  (a one-time "
        f"sign-in link to http://{args.host}:{args.port}/console/)\n"
        "Ctrl-C stops everything.",
        flush=True,
    )
    try:
        web.run_app(
            create_app(settings, workers=True),
            host=args.host,
            port=args.port,
            print=None,
            access_log_format=ACCESS_LOG_FORMAT,
        )
    finally:
        if started_redis:
            stop_embedded_redis(socket)
        print("metrux stopped", flush=True)
    return 0
