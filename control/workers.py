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
from control.ops.metrics import ControlMetrics
from control.retention.worker import RetentionWorker
from control.usage.ingest import UsageIngester
from core.redis_names import RedisNames
from core.usage import UsageRecord


def usage_ingester(
    redis: Redis,
    engine: AsyncEngine,
    names: RedisNames,
    monitor: KeyMonitor,
    *,
    consumer: str | None = None,
    metrics: ControlMetrics | None = None,
) -> UsageIngester:
    """An ingester that shows the key monitor (and the metrics) each batch it stores."""

    async def on_stored(records: list[UsageRecord]) -> None:
        await monitor.on_records(records)
        if metrics is not None:
            metrics.ingested.inc(len(records))

    return UsageIngester(redis, engine, names, consumer=consumer, on_stored=on_stored)


async def run_workers(
    redis: Redis,
    engine: AsyncEngine,
    names: RedisNames,
    monitor: KeyMonitor,
    retention: RetentionWorker,
    metrics: ControlMetrics | None = None,
) -> None:
    """Run every worker until cancelled."""
    ingester = usage_ingester(redis, engine, names, monitor, metrics=metrics)
    async with asyncio.TaskGroup() as group:
        group.create_task(ingester.run(), name="usage-ingester")
        group.create_task(monitor.run(), name="key-monitor")
        group.create_task(retention.run_forever(), name="retention")
