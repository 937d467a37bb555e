"""The control plane's background workers: the usage ingester, the key monitor and the
retention worker (hourly).

They run inside `metrux control serve` (and `metrux up`) unless it is given
`--no-workers`, or on their own with `metrux control worker`. Every replica may run them:
the ingester shares the stream through a consumer group, the monitor claims each check,
and the retention worker's changes apply once whoever runs them.

Each runs supervised: a crash is logged with its traceback, counted
(`metrux_worker_restarts`), and the worker restarted after a backoff that grows while it
keeps crashing. `/readyz` reports a worker that is down.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from control.keys.monitor import KeyMonitor
from control.ops.metrics import ControlMetrics
from control.retention.worker import RetentionWorker
from control.usage.ingest import UsageIngester
from control.usage.store import DeadLetter
from core.backoff import Backoff
from core.redis_names import RedisNames
from core.tasks import spawn
from core.usage import UsageRecord

log = structlog.get_logger(__name__)
STOP_TIMEOUT_S = 10.0
# A worker that ran this long before crashing restarts at the shortest delay again.
HEALTHY_RUN_S = 300.0


@dataclasses.dataclass
class WorkerState:
    name: str
    running: bool = False
    restarts: int = 0
    last_error: str | None = None


@dataclasses.dataclass
class Workers:
    """This process's supervised workers: their tasks, and whether each is running."""

    tasks: list[asyncio.Task[None]]
    states: list[WorkerState]

    def down(self) -> list[str]:
        return [state.name for state in self.states if not state.running]


async def supervise(
    state: WorkerState,
    run: Callable[[], Coroutine[Any, Any, None]],
    metrics: ControlMetrics | None = None,
    backoff: Backoff | None = None,
) -> None:
    """Run a worker until cancelled, restarting it after each crash."""
    backoff = backoff or Backoff(1.0, 60.0)
    while True:
        started = time.monotonic()
        state.running = True
        try:
            await run()
            raise RuntimeError("the worker returned")  # they run until cancelled
        except asyncio.CancelledError:
            state.running = False
            raise
        except Exception as exc:
            state.running = False
            state.restarts += 1
            state.last_error = type(exc).__name__
            if time.monotonic() - started >= HEALTHY_RUN_S:
                backoff.reset()
            log.exception(
                "worker_crashed", worker=state.name, restarts=state.restarts, delay_s=backoff.delay
            )
            if metrics is not None:
                metrics.worker_restarts.labels(state.name).inc()
            await backoff.sleep()


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
            metrics.key_reflected.inc(sum(r.key_reflected for r in records))

    def on_dead(letters: list[DeadLetter]) -> None:
        if metrics is not None:
            for letter in letters:
                metrics.dead_letters.labels(letter.reason.split(":")[0]).inc()

    return UsageIngester(
        redis, engine, names, consumer=consumer, on_stored=on_stored, on_dead=on_dead
    )


def start_workers(
    redis: Redis,
    engine: AsyncEngine,
    names: RedisNames,
    monitor: KeyMonitor,
    retention: RetentionWorker,
    metrics: ControlMetrics | None = None,
) -> Workers:
    """Start every worker, supervised, as its own task, so one that is slow to stop holds
    up no other."""
    ingester = usage_ingester(redis, engine, names, monitor, metrics=metrics)
    runs: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
        "usage-ingester": ingester.run,
        "key-monitor": monitor.run,
        "retention": retention.run_forever,
    }
    states = [WorkerState(name) for name in runs]
    tasks = [
        spawn(supervise(state, runs[state.name], metrics), name=state.name) for state in states
    ]
    return Workers(tasks, states)


async def stop_workers(workers: Workers) -> None:
    """Cancel the workers and wait for them, but never longer than STOP_TIMEOUT_S:
    shutdown must not hang on a client library that is slow to give up a blocking read."""
    tasks = workers.tasks
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
    workers = start_workers(redis, engine, names, monitor, retention, metrics)
    try:
        await asyncio.gather(*workers.tasks)
    finally:
        await stop_workers(workers)
