"""The control plane's background workers: the usage ingester, the key monitor and the
retention worker (hourly).

They run inside `metrux control serve` (and `metrux up`) unless it is given
`--no-workers`, or on their own with `metrux control worker`. Every replica may run them:
the ingester shares the stream through a consumer group, the monitor claims each check,
and the retention worker's changes apply once whoever runs them.
"""

from __future__ import annotations

import asyncio

import structlog
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from control.keys.monitor import KeyMonitor
from control.ops.metrics import ControlMetrics
from control.retention.worker import RetentionWorker
from control.usage.ingest import UsageIngester
from core.redis_names import RedisNames
from core.tasks import spawn
from core.usage import UsageRecord

log = structlog.get_logger(__name__)
STOP_TIMEOUT_S = 10.0


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


def start_workers(
    redis: Redis,
    engine: AsyncEngine,
    names: RedisNames,
    monitor: KeyMonitor,
    retention: RetentionWorker,
    metrics: ControlMetrics | None = None,
) -> list[asyncio.Task[None]]:
    """Start every worker as its own task, so one that is slow to stop holds up no other."""
    ingester = usage_ingester(redis, engine, names, monitor, metrics=metrics)
    return [
        spawn(ingester.run(), name="usage-ingester"),
        spawn(monitor.run(), name="key-monitor"),
        spawn(retention.run_forever(), name="retention"),
    ]


async def stop_workers(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the workers and wait for them, but never longer than STOP_TIMEOUT_S:
    shutdown must not hang on a client library that is slow to give up a blocking read."""
    for task in tasks:
        task.cancel()
    _, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
    for task in pending:
        log.error("worker_did_not_stop", worker=task.get_name())
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("worker_failed", worker=task.get_name(), error=repr(task.exception()))


async def run_workers(
    redis: Redis,
    engine: AsyncEngine,
    names: RedisNames,
    monitor: KeyMonitor,
    retention: RetentionWorker,
    metrics: ControlMetrics | None = None,
) -> None:
    """Run every worker until cancelled (`metrux control worker`)."""
    tasks = start_workers(redis, engine, names, monitor, retention, metrics)
    try:
        await asyncio.gather(*tasks)
    finally:
        await stop_workers(tasks)
