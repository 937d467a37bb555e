"""The control plane's background workers: the usage ingester, the key monitor and the
retention worker (hourly).

They run inside `metrux control serve` (and `metrux up`) unless it is given
`--no-workers`, or on their own with `metrux control worker`. Every replica may run them:
the ingester shares the stream through a consumer group, the monitor claims each check,
and the retention worker's changes apply once whoever runs them.
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from control.keys.monitor import KeyMonitor
from control.retention.worker import RetentionWorker
from control.usage.ingest import UsageIngester
from core.redis_names import RedisNames


def usage_ingester(
    redis: Redis,
    engine: AsyncEngine,
    names: RedisNames,
    monitor: KeyMonitor,
    *,
    consumer: str | None = None,
) -> UsageIngester:
    """An ingester that shows the key monitor each batch it stores."""
    return UsageIngester(redis, engine, names, consumer=consumer, on_stored=monitor.on_records)


async def run_workers(
    redis: Redis,
    engine: AsyncEngine,
    names: RedisNames,
    monitor: KeyMonitor,
    retention: RetentionWorker,
) -> None:
    """Run every worker until cancelled."""
    async with asyncio.TaskGroup() as group:
        group.create_task(
            usage_ingester(redis, engine, names, monitor).run(), name="usage-ingester"
        )
        group.create_task(monitor.run(), name="key-monitor")
        group.create_task(retention.run_forever(), name="retention")
