"""The proxy's key in memory (issue 5, item 5; SECURITY-CHECKS.md C14, C16-C19).

A real `metrux proxy run` process makes calls with a random canary key, the session is
cleared while one slow upload keeps the process alive, and its live memory is read through
/proc/PID/mem: before the clear the key is there (the scanner works), after it no copy
of the key is left.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import anthropic
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from core.redis_names import RedisNames
from core.settings import Settings
from sandbox.standin import MODEL
from tests.conftest import CI
from tests.e2e.processes import finish, start_proxy_process
from tests.security.memory import can_read_memory_of_others, live_copies, status_field
from tests.waiting import wait_until

# Starts the service's own processes.
pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(
        not can_read_memory_of_others() and not CI,
        reason="reading another process's memory needs root (CI runs as root)",
    ),
]
CALLS = 12


async def _metric(http: aiohttp.ClientSession, url: str, name: str) -> float:
    async with http.get(url) as response:
        for line in (await response.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in the metrics")


async def test_no_copy_of_the_key_is_left_in_the_proxy_after_clear(
    aiohttp_server: Any, settings: Settings, engine: AsyncEngine, unused_tcp_port: int
) -> None:
    metrics_url = f"http://127.0.0.1:{unused_tcp_port}/metrics"
    run = await start_proxy_process(
        aiohttp_server,
        settings,
        engine,
        extra_args=("--metrics-listen", f"127.0.0.1:{unused_tcp_port}"),
    )
    process, ready, token = run["process"], run["ready"], run["created"]["sandbox_token"]
    key = run["api_key"].encode()
    client = anthropic.AsyncAnthropic(base_url=ready["url"], api_key=token, max_retries=0)
    for n in range(CALLS):
        kwargs: dict[str, Any] = {
            "model": MODEL,
            "max_tokens": 8,
            "messages": [{"role": "user", "content": f"call {n}"}],
        }
        if n % 2:
            async with client.messages.stream(**kwargs) as stream:
                await stream.get_final_message()
        else:
            await client.messages.create(**kwargs)
    assert len(run["fake"].requests) == CALLS

    # Armed: the key is in memory (a positive control for the scanner), on a locked page.
    assert live_copies(process.pid, key) >= 1
    assert status_field(process.pid, "VmLck") != "0 kB"

    # A slow upload keeps one call in flight, so the process stays alive after the clear.
    host, port = ready["url"].removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    body = json.dumps(
        {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "late"}]}
    ).encode()
    writer.write(
        b"POST /v1/messages HTTP/1.1\r\nHost: sandbox\r\nContent-Type: application/json\r\n"
        + f"x-api-key: {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body[:10]
    )
    await writer.drain()
    async with aiohttp.ClientSession() as http:
        # The other process's state is only visible by asking: poll it, bounded.
        async def in_flight() -> bool:
            return await _metric(http, metrics_url, "metrux_proxy_calls_in_flight") >= 1

        await wait_until(
            in_flight, within=30, what="the slow upload in the proxy's handler", every=0.01
        )
        async with http.post(
            f"{ready['url']}/_proxy/disconnect", headers={"x-api-key": token}
        ) as cleared:
            assert cleared.status == 200
        assert await _metric(http, metrics_url, "metrux_proxy_key_armed") == 0

    assert process.returncode is None  # still draining the slow upload
    assert live_copies(process.pid, key) == 0
    # Not even a 16-character piece of it (the tail a truncating log would keep).
    assert live_copies(process.pid, key[-16:]) == 0

    writer.write(body[10:])
    await writer.drain()
    status_line = await reader.readline()
    assert status_line.startswith(b"HTTP/1.1 403")
    writer.close()
    code, stderr = await finish(process)
    assert code == 0
    assert run["api_key"] not in stderr
    redis = Redis.from_url(settings.redis_url or "")
    await redis.delete(RedisNames(settings.redis_prefix).usage_stream)
    await redis.aclose()
