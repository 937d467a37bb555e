"""`metrux control serve` as its own process: SIGTERM lets an in-flight request finish."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from core.settings import Settings
from tests.e2e.processes import METRUX, free_port, metrux_env
from tests.factories import fake_anthropic_key, make_tenant

pytestmark = pytest.mark.process  # starts the service's own processes


async def refused(url: str, attempts: int = 200) -> bool:
    """Whether new connections to `url` come to be refused (each try on a fresh connection)."""
    for _ in range(attempts):
        try:
            async with (
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh,
                fresh.get(url) as r,
            ):
                await r.read()
        except aiohttp.ClientConnectorError:
            return True
        await asyncio.sleep(0.05)  # polling a port: there is no event to await
    return False


async def test_sigterm_finishes_the_request_in_flight_then_exits(
    aiohttp_server: Any, settings: Settings, engine: AsyncEngine
) -> None:
    # The key check of an upload waits at this stand-in until the test lets it answer.
    arrived, release = asyncio.Event(), asyncio.Event()

    async def models(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.json_response({"data": [], "has_more": False})

    upstream = web.Application()
    upstream.router.add_get("/v1/models", models)
    upstream_server = await aiohttp_server(upstream)
    tenant = await make_tenant(engine)
    port = free_port()
    env = metrux_env(
        settings,
        METRUX_UPSTREAM_URL=str(upstream_server.make_url("")).rstrip("/"),
        # The check waits for the shutdown below; on a busy machine that can take seconds.
        METRUX_KEY_CHECK_TIMEOUT_S="120",
    )
    process = await asyncio.create_subprocess_exec(
        METRUX, "control", "serve", "--port", str(port), "--no-workers",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(150):
                try:
                    async with http.get(f"{base}/healthz"):
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            upload = asyncio.ensure_future(
                http.post(
                    f"{base}/v1/keys",
                    json={"api_key": fake_anthropic_key()},
                    headers=tenant.auth,
                )
            )
            await asyncio.wait_for(arrived.wait(), 15)
            process.send_signal(signal.SIGTERM)
            # The server stops accepting first: wait until a new connection is refused.
            assert await refused(f"{base}/healthz")
            release.set()
            response = await asyncio.wait_for(upload, 15)
            assert response.status == 201
            assert (await response.json())["status"] == "valid"
            response.release()
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, stderr.decode()[-2000:]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
