"""Stopping the background workers is bounded: one that will not stop holds up nothing."""

from __future__ import annotations

import asyncio
import io

import pytest

from control import workers
from core.tasks import spawn

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
    await asyncio.wait_for(workers.stop_workers(tasks), timeout=5)
    assert tasks[1].cancelled()
    assert not tasks[0].done()
    assert '"worker": "stubborn"' in log_output.getvalue()
    release.set()
    await tasks[0]
