"""Customer keys under AWS KMS (moto's server): upload, attach and unwrap end to end, a KMS
outage at upload and at attach, and KEK rotation with `rewrap` while attaches go on. The
control plane unwraps and seals; proxies never hold a KMS setting or AWS credential."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path
from typing import Any

import anthropic
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from control.app import create_app
from control.db.schema import api_keys
from control.keys.rewrap import rewrap_all
from core.crypto.envelope import KeyContext, UnwrapError, WrappedKey, unwrap_secret
from core.crypto.kek import KekRing, LocalKek, load_kek
from core.settings import KekProviderName, Settings
from proxy.attach import Unavailable, attach
from sandbox.standin import MODEL
from tests.conftest import CLOSED_UPSTREAM
from tests.e2e.processes import finish, start_proxy_process
from tests.factories import OPERATOR, TenantFixture, fake_anthropic_key, make_tenant


def kms_settings(settings: Settings, endpoint: str, key: str) -> Settings:
    return dataclasses.replace(
        settings,
        kek_provider=KekProviderName.AWS_KMS,
        kms_key_id=key,
        kms_endpoint_url=endpoint,
    )


async def upload(client: Any, tenant: TenantFixture, api_key: str) -> tuple[int, Any]:
    async with client.post("/v1/keys", json={"api_key": api_key}, headers=tenant.auth) as r:
        return r.status, await r.json()


async def new_session(client: Any, tenant: TenantFixture, key_id: str) -> dict[str, Any]:
    async with client.post(
        "/v1/sessions",
        json={"candidate_email": "c@example.com", "api_key_id": key_id},
        headers=tenant.auth,
    ) as r:
        assert r.status == 201
        return await r.json()  # type: ignore[no-any-return]


async def attach_and_unwrap(client: Any, session: dict[str, Any]) -> bytes:
    """Attach as a proxy does (no KEK of its own) and read back the key it armed."""
    _, key = await attach(
        str(client.make_url("")).rstrip("/"), session["id"], session["bootstrap_token"]
    )
    try:
        armed = bytearray(key.size)
        key.copy_into(memoryview(armed))
        return bytes(armed)
    finally:
        key.clear()


@dataclasses.dataclass
class KmsStack:
    settings: Settings
    client: Any
    tenant: TenantFixture
    api_key: str
    uploaded: dict[str, Any]


async def kms_stack(
    aiohttp_client: Any, settings: Settings, engine: AsyncEngine, endpoint: str, key: str
) -> KmsStack:
    """A control plane on KMS with a tenant whose key is uploaded."""
    settings = kms_settings(settings, endpoint, key)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    client = await aiohttp_client(create_app(settings))
    tenant = await make_tenant(engine)
    api_key = fake_anthropic_key()
    status, uploaded = await upload(client, tenant, api_key)
    assert status == 201
    return KmsStack(settings, client, tenant, api_key, uploaded)


async def test_upload_attach_and_unwrap_through_kms(
    aiohttp_client: Any,
    settings: Settings,
    engine: AsyncEngine,
    kms_server: str,
    kms_key: str,
) -> None:
    kms = await kms_stack(aiohttp_client, settings, engine, kms_server, kms_key)
    client, tenant, api_key, uploaded = kms.client, kms.tenant, kms.api_key, kms.uploaded
    async with engine.connect() as conn:
        kek_id = (
            await conn.execute(select(api_keys.c.kek_id).where(api_keys.c.id == uploaded["id"]))
        ).scalar_one()
    assert kek_id.startswith("aws-kms:arn:")
    session = await new_session(client, tenant, uploaded["id"])
    assert await attach_and_unwrap(client, session) == api_key.encode()


@pytest.mark.process
async def test_a_proxy_process_attaches_under_kms_holding_no_aws_credential(
    aiohttp_server: Any,
    settings: Settings,
    engine: AsyncEngine,
    kms_server: str,
    kms_key: str,
) -> None:
    run = await start_proxy_process(
        aiohttp_server, kms_settings(settings, kms_server, kms_key), engine
    )
    process = run["process"]
    environ = Path(f"/proc/{process.pid}/environ").read_bytes()  # noqa: ASYNC240
    names = {entry.split(b"=", 1)[0] for entry in environ.split(b"\0") if entry}
    assert not {n for n in names if n.startswith((b"AWS_", b"METRUX_KMS", b"METRUX_KEK"))}
    assert b"KEY_ENCRYPTION_KEY" not in names
    client = anthropic.AsyncAnthropic(
        base_url=run["ready"]["url"], api_key=run["created"]["sandbox_token"], max_retries=0
    )
    await client.messages.create(
        model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}]
    )
    assert run["fake"].requests[0].headers["x-api-key"] == run["api_key"]
    process.terminate()
    assert (await finish(process))[0] == 0


async def test_kms_down_at_upload_stores_nothing_and_says_so(
    aiohttp_client: Any, settings: Settings, engine: AsyncEngine, kms_key: str
) -> None:
    settings = kms_settings(settings, CLOSED_UPSTREAM, kms_key)
    client = await aiohttp_client(create_app(settings))
    tenant = await make_tenant(engine)
    status, body = await upload(client, tenant, fake_anthropic_key())
    assert status == 503
    assert "nothing was stored" in body["error"]["message"]
    async with engine.connect() as conn:
        assert list(await conn.execute(select(api_keys.c.id))) == []
    async with client.get("/v1/audit?action=key:upload", headers=tenant.auth) as r:
        [event] = (await r.json())["events"]
    assert (event["outcome"], event["details"]["reason"]) == (
        "failure",
        "KMS unavailable: EndpointConnectionError",
    )


@pytest.mark.both_databases  # the rewrap is a store operation over every key
async def test_rewrap_moves_every_key_to_kms_while_attaches_go_on(
    aiohttp_client: Any,
    settings: Settings,
    engine: AsyncEngine,
    kms_server: str,
    kms_key: str,
) -> None:
    local_settings = dataclasses.replace(settings, key_encryption_key=os.urandom(32))
    local_settings.data_dir.mkdir(parents=True, exist_ok=True)
    client = await aiohttp_client(create_app(local_settings))
    tenant = await make_tenant(engine)
    keys = {}
    for _ in range(4):
        api_key = fake_anthropic_key()
        status, uploaded = await upload(client, tenant, api_key)
        assert status == 201
        keys[uploaded["id"]] = api_key
    sessions = [await new_session(client, tenant, key_id) for key_id in keys]

    # The services now run on KMS and still read the local KEK (KEY_ENCRYPTION_KEY is kept).
    rotated = kms_settings(local_settings, kms_server, kms_key)
    ring = load_kek(rotated)
    assert isinstance(ring, KekRing)
    rotated_client = await aiohttp_client(create_app(rotated))
    report, *unwrapped = await asyncio.gather(
        rewrap_all(engine, ring, OPERATOR, batch=2),
        *(attach_and_unwrap(rotated_client, s) for s in sessions),
    )
    assert report.rewrapped == 4
    assert unwrapped == [keys[s["api_key_id"]].encode() for s in sessions]

    async with engine.connect() as conn:
        rows = list(await conn.execute(select(api_keys)))
    assert all(row.kek_id.startswith("aws-kms:arn:") for row in rows)
    # Nothing decrypts with the old KEK any more.
    old_only = LocalKek(local_settings.key_encryption_key or b"")
    for row in rows:
        with pytest.raises(UnwrapError):
            await unwrap_secret(
                old_only,
                WrappedKey(
                    row.kek_id,
                    row.encrypted_data_key,
                    row.nonce,
                    row.ciphertext,
                    row.format_version,
                ),
                KeyContext(tenant_id=row.tenant_id, key_id=row.id),
            )
    async with client.get("/v1/audit?action=key:rewrap", headers=tenant.auth) as r:
        assert len((await r.json())["events"]) == 4

    again = await rewrap_all(engine, ring, OPERATOR)  # resumable: nothing left to do
    assert (again.rewrapped, again.already_current) == (0, 4)


async def test_kms_down_at_attach_is_a_503_audited_and_the_token_stays_good(
    aiohttp_client: Any,
    settings: Settings,
    engine: AsyncEngine,
    kms_server: str,
    kms_key: str,
) -> None:
    kms = await kms_stack(aiohttp_client, settings, engine, kms_server, kms_key)
    client, tenant, api_key = kms.client, kms.tenant, kms.api_key
    session = await new_session(client, tenant, kms.uploaded["id"])
    # A control-plane replica whose KMS is unreachable.
    down = await aiohttp_client(
        create_app(dataclasses.replace(kms.settings, kms_endpoint_url=CLOSED_UPSTREAM))
    )
    with pytest.raises(Unavailable) as failed:
        await attach(
            str(down.make_url("")).rstrip("/"),
            session["id"],
            session["bootstrap_token"],
            retry_for=0,
        )
    assert "key-encryption service is unavailable" in str(failed.value)
    async with client.get("/v1/audit?action=key:unwrap", headers=tenant.auth) as r:
        outcomes = [(e["outcome"], e["details"]) for e in (await r.json())["events"]]
    assert outcomes == [
        (
            "failure",
            {"reason": "the key-encryption service is unavailable; retry with the same token"},
        )
    ]
    # KMS is back (another replica): the same token attaches, and the key unwraps.
    assert await attach_and_unwrap(client, session) == api_key.encode()
