"""The whole path on one loop: control plane, proxy, fake Anthropic, real Redis and DB.

The proxy runs in-process, built by the production code path (attach, then
`proxy.app.create_app`, whose cleanup contexts run its publisher, signal stream and
watchdogs), so tests can look at its state; test_proxy_process.py runs `metrux proxy run`
as its own process.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from control import appkeys
from control.app import create_app as create_control_app
from control.usage import store as usage_store
from control.workers import usage_ingester
from core.redis_names import RedisNames
from core.settings import Settings
from proxy.app import Proxy
from proxy.attach import attach
from proxy.key_opener import InProcessOpener
from proxy.publisher import UsagePublisher
from proxy.session import ProxySession
from sandbox.standin import FakeAnthropic
from tests.factories import TenantFixture, fake_anthropic_key, make_tenant


@dataclasses.dataclass
class Stack:
    settings: Settings
    engine: AsyncEngine
    redis: Redis
    names: RedisNames
    control: Any  # aiohttp TestClient of the control plane
    fake: FakeAnthropic
    fake_url: str
    tenant: TenantFixture
    api_key: str  # the customer's (fake) Anthropic key
    key_id: str
    session_id: str
    sandbox_token: str
    grader_token: str
    proxy: ProxySession
    publisher: UsagePublisher
    proxy_url: str
    proxy_app: Proxy
    sent: list[Any] = dataclasses.field(default_factory=list)  # requests the SDK sent

    def sdk(self, **kwargs: Any) -> anthropic.AsyncAnthropic:
        """The official SDK pointed at the proxy with the sandbox token, as a candidate's
        code would be; every request it sends is kept in `sent`."""

        async def keep(request: Any) -> None:
            self.sent.append(request)

        options: dict[str, Any] = {"max_retries": 0, **kwargs}
        options.setdefault("api_key", self.sandbox_token)
        options["http_client"] = anthropic.DefaultAsyncHttpxClient(event_hooks={"request": [keep]})
        return anthropic.AsyncAnthropic(base_url=self.proxy_url, **options)

    async def records(self) -> list[dict[str, Any]]:
        """Every usage record so far, after publishing and ingesting what is pending."""
        # The proxy answers before it meters: wait for its handlers to finish first.
        await asyncio.wait_for(self.proxy.idle.wait(), 10)
        assert await self.publisher.flush(10)
        # As the control plane's workers do: the key monitor sees each stored batch.
        monitor = self.control.app[appkeys.key_monitor]
        ingester = usage_ingester(
            self.redis,
            self.engine,
            self.names,
            monitor,
            consumer="test",
            metrics=self.control.app[appkeys.metrics],
        )
        await ingester.ensure_group()
        while await ingester.ingest_once():
            pass
        async with self.engine.connect() as conn:
            return await usage_store.list_records(conn, self.session_id)


async def start_proxy_for(
    settings: Settings, control_url: str, session_id: str, bootstrap: str, upstream: str
) -> Proxy:
    """Attach a proxy and serve it as `metrux proxy run` does (the same class, listener
    and resources); the caller stops it."""
    # The key opens in this process (the suite loads cryptography anyway); the child that
    # `metrux proxy run` uses is exercised by every process test and tests/proxy/.
    grant, key = await attach(control_url, session_id, bootstrap, opener=InProcessOpener())
    proxy = Proxy(settings, grant, key, control_url=control_url, upstream_url=upstream)
    await proxy.start("127.0.0.1", 0)
    # Connected: a signal sent from here on reaches the proxy.
    await asyncio.wait_for(proxy.signals.connected.wait(), 10)
    return proxy


@pytest.fixture
async def stack(
    aiohttp_client: Any,
    aiohttp_server: Any,
    settings: Settings,
    engine: AsyncEngine,
    log_output: Any,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Stack]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    api_key = fake_anthropic_key()
    fake = FakeAnthropic(api_key)
    fake_server = await aiohttp_server(fake.app)  # test servers cancel handlers on disconnect
    fake_url = str(fake_server.make_url("")).rstrip("/")
    settings = dataclasses.replace(settings, upstream_url=fake_url)
    control = await aiohttp_client(create_control_app(settings))
    tenant = await make_tenant(engine)
    async with control.post("/v1/keys", json={"api_key": api_key}, headers=tenant.auth) as r:
        uploaded = await r.json()
        assert r.status == 201, uploaded
        key_id = uploaded["id"]
    assert uploaded["status"] == "valid"
    fake.requests.clear()  # the upload's key check; tests look at what the sandbox sent
    limits = getattr(request, "param", {}) or {}
    async with control.post(
        "/v1/sessions", json={"candidate_email": "cand@example.com", **limits}, headers=tenant.auth
    ) as r:
        created = await r.json()
        assert r.status == 201, created
    redis = Redis.from_url(settings.redis_url or "")
    names = RedisNames(settings.redis_prefix)
    proxy = await start_proxy_for(
        settings,
        str(control.make_url("")).rstrip("/"),
        created["id"],
        created["bootstrap_token"],
        fake_url,
    )
    session = proxy.session
    publisher = proxy.publisher
    yield Stack(
        settings=settings,
        engine=engine,
        redis=redis,
        names=names,
        control=control,
        fake=fake,
        fake_url=fake_url,
        tenant=tenant,
        api_key=api_key,
        key_id=key_id,
        session_id=created["id"],
        sandbox_token=created["sandbox_token"],
        grader_token=created["grader_token"],
        proxy=session,
        publisher=publisher,
        proxy_url=proxy.url,
        proxy_app=proxy,
    )
    # The proxy first, while its control plane still answers: its records are flushed.
    await proxy.stop()
    assert publisher.pending == 0
    keys = [k async for k in redis.scan_iter(match=f"{settings.redis_prefix}*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()
