"""Background workers are supervised (a crash restarts them), and stopping them is bounded:
one that will not stop holds up nothing."""

from __future__ import annotations

import asyncio
import contextlib
import io

import pytest

from control import workers
from control.ops.metrics import ControlMetrics
from core.backoff import Backoff
from core.tasks import spawn
from tests.waiting import wait_until

# What these tests check depends on the database: they run on SQLite and PostgreSQL.
pytestmark = pytest.mark.both_databases


async def test_a_worker_that_ignores_cancellation_does_not_hang_shutdown(
    monkeypatch: pytest.MonkeyPatch, log_output: io.StringIO
) -> None:
    monkeypatch.setattr(workers, "STOP_TIMEOUT_S", 0.2)
    release, started = asyncio.Event(), asyncio.Event()

    async def stubborn() -> None:
        started.set()
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # what a misbehaving client library can do

    async def polite() -> None:
        await asyncio.Event().wait()

    tasks = [spawn(stubborn(), name="stubborn"), spawn(polite(), name="polite")]
    await started.wait()
    await asyncio.wait_for(workers.stop_workers(workers.Workers(tasks, [])), timeout=5)
    assert tasks[1].cancelled()
    assert not tasks[0].done()
    assert '"worker": "stubborn"' in log_output.getvalue()
    release.set()
    await tasks[0]


async def test_a_crashing_worker_is_logged_counted_and_restarted(log_output: io.StringIO) -> None:
    metrics = ControlMetrics()
    state = workers.WorkerState("flaky")
    runs = 0
    restarted = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise ValueError("a bad day")
        restarted.set()
        await asyncio.Event().wait()

    task = spawn(workers.supervise(state, flaky, metrics, Backoff(0.001, 0.002)), name="t")
    await asyncio.wait_for(restarted.wait(), timeout=10)
    assert (runs, state.restarts, state.running, state.last_error) == (3, 2, True, "ValueError")
    assert metrics.worker_restarts.labels("flaky")._value.get() == 2
    logged = log_output.getvalue()
    assert logged.count('"event": "worker_crashed"') == 2
    assert "Traceback" in logged
    assert "a bad day" in logged
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert not state.running


async def test_a_worker_in_its_restart_delay_is_down() -> None:
    state = workers.WorkerState("broken")
    crashed = asyncio.Event()

    async def broken() -> None:
        crashed.set()
        raise RuntimeError("always")

    task = spawn(workers.supervise(state, broken, None, Backoff(3600, 3600)), name="t")
    await asyncio.wait_for(crashed.wait(), timeout=10)
    await wait_until(lambda: state.restarts == 1, within=10, what="the first restart")
    assert workers.Workers([task], [state]).down() == ["broken"]
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
