"""No customer key in the long-lived control-plane processes (issue 14, item 5).

A real `metrux control serve` takes an upload and an on-demand key check, and a real
`metrux control worker` runs a scheduled health check; then their live memory is read
through /proc/PID/mem. Key checks run in a short-lived child process that gets the data key
sealed to it, so the key is never handed to a client library here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from control.db.schema import api_keys
from core.settings import Settings
from sandbox.standin import FakeAnthropic
from tests.conftest import CI
from tests.e2e.processes import METRUX, free_port, metrux_env
from tests.factories import fake_anthropic_key, make_tenant
from tests.security.memory import can_read_memory_of_others, live_copies
from tests.waiting import wait_until

# Starts the service's own processes.
pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(
        not can_read_memory_of_others() and not CI,
        reason="reading another process's memory needs root (CI runs as root)",
    ),
]


def pieces(key: str) -> list[bytes]:
    """The key and parts of it that would betray it."""
    raw = key.encode()
    return [raw, raw[-16:], raw[20:44]]


async def _wait_http(url: str) -> None:
    async with aiohttp.ClientSession() as http:

        async def answers() -> bool:  # a process starting up: there is no event to await
            try:
                async with http.get(url):
                    return True
            except aiohttp.ClientError:
                return False

        await wait_until(answers, within=30, what=f"{url} to answer", every=0.1)


async def _last_checked(engine: AsyncEngine, key_id: str) -> Any:
    async with engine.connect() as conn:
        return (
            await conn.execute(select(api_keys.c.last_checked_at).where(api_keys.c.id == key_id))
        ).scalar_one()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_no_key_in_the_control_plane_or_worker_after_upload_and_checks(
    aiohttp_server: Any, settings: Settings, engine: AsyncEngine
) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    api_key = fake_anthropic_key()
    fake = FakeAnthropic(api_key)
    upstream = str((await aiohttp_server(fake.app)).make_url("")).rstrip("/")
    env = metrux_env(settings, METRUX_UPSTREAM_URL=upstream)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve = await asyncio.create_subprocess_exec(
        METRUX, "control", "serve", "--port", str(port), "--no-workers",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    worker = None
    try:
        await _wait_http(f"{base}/healthz")
        tenant = await make_tenant(engine)
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{base}/v1/keys", json={"api_key": api_key}, headers=tenant.auth
            ) as r:
                uploaded = await r.json()
                assert (r.status, uploaded["status"]) == (201, "valid")
            assert [p for p in pieces(api_key) if live_copies(serve.pid, p)] == []
            # The scanner sees this process's heap: the key's id is there.
            assert live_copies(serve.pid, uploaded["id"].encode()) > 0

            async with http.post(
                f"{base}/v1/keys/{uploaded['id']}/check", headers=tenant.auth
            ) as r:
                assert (r.status, (await r.json())["status"]) == (200, "valid")
            assert [p for p in pieces(api_key) if live_copies(serve.pid, p)] == []
        assert len(fake.requests) == 2  # both checks reached Anthropic, with the key
        assert all(request.headers["x-api-key"] == api_key for request in fake.requests)

        # A scheduled health check in the worker.
        checked_before = await _last_checked(engine, uploaded["id"])
        async with engine.begin() as conn:
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == uploaded["id"])
                .values(next_check_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
            )
        worker_log = (settings.data_dir / "worker.log").open("wb")
        worker = await asyncio.create_subprocess_exec(
            METRUX, "control", "worker",
            env=env, stdout=worker_log, stderr=worker_log,
        )  # fmt: skip

        async def checked() -> bool:  # on the worker's own schedule
            return await _last_checked(engine, uploaded["id"]) != checked_before

        try:
            await wait_until(checked, within=60, what="the worker to check the key")
        except AssertionError as exc:
            log = (settings.data_dir / "worker.log").read_text()[-3000:]
            raise AssertionError(f"{exc}: {log}") from None
        assert len(fake.requests) == 3
        assert [p for p in pieces(api_key) if live_copies(worker.pid, p)] == []
        assert live_copies(worker.pid, uploaded["id"].encode()) > 0
    finally:
        for process in (serve, worker):
            if process is not None and process.returncode is None:
                process.terminate()
                await asyncio.wait_for(process.wait(), 30)
