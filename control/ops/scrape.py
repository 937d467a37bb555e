"""What a scrape reads before the metrics are rendered: the shared state's gauges, from the
database and Redis, so that every replica reports the same truth."""

from __future__ import annotations

import contextlib

from aiohttp import web
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from control import appkeys
from control.keys.store import count_by_status
from control.sessions.store import count_by_state


async def refresh(app: web.Application) -> None:
    metrics = app[appkeys.metrics]
    try:
        async with app[appkeys.engine].connect() as conn:
            metrics.set_counts(await count_by_state(conn), await count_by_status(conn))
    except SQLAlchemyError:
        pass  # /readyz reports the database; the gauges keep their last values
    with contextlib.suppress(RedisError, OSError):  # /readyz reports Redis
        metrics.backlog.set(await app[appkeys.redis].xlen(app[appkeys.names].usage_stream))
