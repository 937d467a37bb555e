"""Run `metrux` commands as real processes: the environment they get from a test's
settings, a free port, and `metrux proxy run` against an in-test control plane and a fake
Anthropic upstream."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from control.app import create_app
from core.settings import Settings
from sandbox.standin import FakeAnthropic
from tests.factories import TenantFixture, fake_anthropic_key, make_tenant

METRUX = str(Path(sys.executable).with_name("metrux"))


def metrux_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that gives a `metrux` process the same settings as the test."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "METRUX_DATA_DIR": str(settings.data_dir),
        "DATABASE_URL": settings.database_url or "",
        "REDIS_URL": settings.redis_url or "",
        "METRUX_REDIS_PREFIX": settings.redis_prefix,
        "KEY_ENCRYPTION_KEY": base64.b64encode(settings.key_encryption_key or b"").decode(),
        "METRUX_LOG_FORMAT": "json",
        **extra,
    }


def proxy_env(settings: Settings, bootstrap_token: str, **extra: str) -> dict[str, str]:
    """What a proxy process is given: its bootstrap token, never a Redis, database or
    key-encryption setting (its only peer is the control plane, which seals its key)."""
    env = metrux_env(settings, METRUX_BOOTSTRAP_TOKEN=bootstrap_token, **extra)
    for name in (
        "DATABASE_URL", "REDIS_URL", "METRUX_REDIS_PREFIX", "METRUX_DATA_DIR", "KEY_ENCRYPTION_KEY"
    ):  # fmt: skip
        del env[name]
    return env


class RestartableControl:
    """A control plane on a fixed port that a test can stop and start again, as a
    deployment restarts one: same database, same Redis, same address."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: TestServer | None = None

    async def start(self) -> None:
        self._server = TestServer(create_app(self._settings), host="127.0.0.1", port=self.port)
        await self._server.start_server()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.close()
            self._server = None


@dataclasses.dataclass
class ControlWithKey:
    """A control plane (in-test server) with a tenant whose key is uploaded, and the fake
    Anthropic upstream that key works against."""

    base: str
    tenant: TenantFixture
    api_key: str
    fake: FakeAnthropic
    fake_url: str


async def control_with_key(
    aiohttp_server: Any, settings: Settings, engine: AsyncEngine
) -> ControlWithKey:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    api_key = fake_anthropic_key()
    fake = FakeAnthropic(api_key)
    fake_server = await aiohttp_server(fake.app)
    control = await aiohttp_server(create_app(settings))
    base = str(control.make_url("")).rstrip("/")
    tenant = await make_tenant(engine)
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{base}/v1/keys", json={"api_key": api_key}, headers=tenant.auth) as r,
    ):
        assert r.status == 201
    return ControlWithKey(base, tenant, api_key, fake, str(fake_server.make_url("")).rstrip("/"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_proxy_process(
    aiohttp_server: Any,
    settings: Settings,
    engine: AsyncEngine,
    stream_pace: float = 0.0,
    extra_args: tuple[str, ...] = (),
    control: RestartableControl | None = None,
    proxy_settings: dict[str, str] | None = None,
    **session: Any,
) -> dict[str, Any]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    api_key = fake_anthropic_key()
    fake = FakeAnthropic(api_key, stream_pace=stream_pace)
    fake_server = await aiohttp_server(fake.app)
    if control is None:
        server = await aiohttp_server(create_app(settings))
        base = str(server.make_url("")).rstrip("/")
    else:
        base = control.url
    tenant = await make_tenant(engine)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/v1/keys", json={"api_key": api_key}, headers=tenant.auth):
            pass
        async with http.post(
            f"{base}/v1/sessions",
            json={"candidate_email": "c@example.com", **session},
            headers=tenant.auth,
        ) as r:
            created = await r.json()
    env = proxy_env(settings, created["bootstrap_token"], **(proxy_settings or {}))
    process = await asyncio.create_subprocess_exec(
        METRUX, "proxy", "run", "--session", created["id"], "--control-url", base,
        "--upstream", str(fake_server.make_url("")).rstrip("/"), *extra_args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    line = await asyncio.wait_for(process.stdout.readline(), timeout=30)  # type: ignore[union-attr]
    if not line:  # it exited before it was ready: say why
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
        raise AssertionError(f"the proxy did not start: {stderr.decode()[-2000:]}")
    ready = json.loads(line)
    return {
        "process": process,
        "ready": ready,
        "created": created,
        "api_key": api_key,
        "fake": fake,
        "fake_url": str(fake_server.make_url("")).rstrip("/"),
        "tenant": tenant,
        "control": base,
    }


async def finish(process: asyncio.subprocess.Process, within: float = 30) -> tuple[int, str]:
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=within)
    return process.returncode or 0, stderr.decode()
