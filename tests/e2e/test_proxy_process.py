"""`metrux proxy run` as its own process: ready line, hardening, clear-and-exit."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from core.redis_names import RedisNames
from core.settings import Settings
from core.usage import UsageRecord
from sandbox.standin import MODEL
from tests.e2e.processes import METRUX, finish, start_proxy_process

pytestmark = pytest.mark.process  # starts the service's own processes


async def test_ready_line_hardening_sigterm_and_flush(
    aiohttp_server: Any, settings: Settings, engine: AsyncEngine
) -> None:
    run = await start_proxy_process(aiohttp_server, settings, engine)
    process, ready, api_key = run["process"], run["ready"], run["api_key"]
    assert ready["event"] == "ready"
    assert ready["session_id"] == run["created"]["id"]
    assert ready["url"].startswith("http://127.0.0.1:")
    client = anthropic.AsyncAnthropic(
        base_url=ready["url"], api_key=run["created"]["sandbox_token"], max_retries=0
    )
    message = await client.messages.create(
        model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].text == "Hello from the fake."
    assert run["fake"].requests[0].headers["x-api-key"] == api_key

    proc = Path(f"/proc/{process.pid}")
    assert api_key.encode() not in (proc / "environ").read_bytes()
    assert api_key.encode() not in (proc / "cmdline").read_bytes()
    limits = (proc / "limits").read_text()
    core_line = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
    assert core_line.split()[4:6] == ["0", "0"]

    process.terminate()
    code, stderr = await finish(process)
    assert code == 0
    assert api_key not in stderr
    assert api_key[-16:] not in stderr
    exit_event = [json.loads(line) for line in stderr.splitlines() if '"proxy_exiting"' in line]
    assert exit_event[0]["reason"] == "sigterm"
    assert exit_event[0]["unsent_records"] == 0
    redis = Redis.from_url(settings.redis_url or "")
    assert await redis.xlen(RedisNames(settings.redis_prefix).usage_stream) == 1
    await redis.delete(RedisNames(settings.redis_prefix).usage_stream)
    await redis.aclose()


async def test_sigterm_during_a_stream_lets_it_finish_and_flushes_its_record(
    aiohttp_server: Any, settings: Settings, engine: AsyncEngine
) -> None:
    run = await start_proxy_process(aiohttp_server, settings, engine, stream_pace=0.05)
    process, ready = run["process"], run["ready"]
    body = {
        "model": MODEL,
        "max_tokens": 8,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{ready['url']}/v1/messages",
            json=body,
            headers={"x-api-key": run["created"]["sandbox_token"]},
        ) as r,
    ):
        first = await r.content.readany()  # the stream has started
        assert first.startswith(b"event: message_start")
        process.terminate()
        rest = await r.content.read()
    assert rest.rstrip().endswith(b'data: {"type":"message_stop"}')
    code, stderr = await finish(process)
    assert code == 0
    [exit_event] = [json.loads(line) for line in stderr.splitlines() if '"proxy_exiting"' in line]
    assert (exit_event["reason"], exit_event["unsent_records"]) == ("sigterm", 0)
    redis = Redis.from_url(settings.redis_url or "")
    stream = RedisNames(settings.redis_prefix).usage_stream
    [(_, fields)] = await redis.xrange(stream)
    record = UsageRecord.from_fields(fields)
    assert (record.complete, record.stream, record.output_tokens) == (True, True, 12)
    await redis.delete(stream)
    await redis.aclose()


async def test_metrics_are_served_on_their_own_listener(
    aiohttp_server: Any, settings: Settings, engine: AsyncEngine, unused_tcp_port: int
) -> None:
    run = await start_proxy_process(
        aiohttp_server,
        settings,
        engine,
        extra_args=("--metrics-listen", f"127.0.0.1:{unused_tcp_port}"),
    )
    client = anthropic.AsyncAnthropic(
        base_url=run["ready"]["url"], api_key=run["created"]["sandbox_token"], max_retries=0
    )
    await client.messages.create(
        model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}]
    )
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{unused_tcp_port}/metrics") as r,
    ):
        text = await r.text()
    calls = 'metrux_proxy_upstream_calls_total{complete="true",endpoint="/v1/messages",'
    assert calls + 'status="200"} 1.0' in text
    assert 'metrux_proxy_tokens_total{kind="output"} 12.0' in text
    assert "metrux_proxy_key_armed 1.0" in text
    assert run["api_key"] not in text
    assert run["created"]["sandbox_token"] not in text
    run["process"].terminate()
    assert (await finish(run["process"]))[0] == 0
    redis = Redis.from_url(settings.redis_url or "")
    await redis.delete(RedisNames(settings.redis_prefix).usage_stream)
    await redis.aclose()


async def test_ending_the_session_makes_the_process_exit(
    aiohttp_server: Any, settings: Settings, engine: AsyncEngine
) -> None:
    run = await start_proxy_process(aiohttp_server, settings, engine)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{run['control']}/v1/sessions/{run['created']['id']}/end", headers=run["tenant"].auth
        ) as r,
    ):
        assert r.status == 200
    code, stderr = await finish(run["process"])
    assert code == 0
    # The signal, or the state key the proxy also polls, whichever reaches it first.
    [exit_event] = [json.loads(line) for line in stderr.splitlines() if '"proxy_exiting"' in line]
    assert exit_event["reason"] in ("signal_end", "session_ended")


async def test_spent_bootstrap_token_stops_start_up_with_a_message(
    aiohttp_server: Any, settings: Settings, engine: AsyncEngine
) -> None:
    run = await start_proxy_process(aiohttp_server, settings, engine)
    run["process"].terminate()
    await finish(run["process"])
    second = await asyncio.create_subprocess_exec(
        METRUX, "proxy", "run", "--session", run["created"]["id"], "--control-url", run["control"],
        env={
            "PATH": os.environ.get("PATH", ""),
            "METRUX_BOOTSTRAP_TOKEN": run["created"]["bootstrap_token"],
            "REDIS_URL": settings.redis_url or "",
            "METRUX_DATA_DIR": str(settings.data_dir),
        },
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(second.communicate(), timeout=30)
    assert second.returncode == 1
    assert stdout == b""
    assert b"bootstrap token already used" in stderr
