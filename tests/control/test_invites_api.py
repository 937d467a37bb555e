"""Invites: created and sent, looked up and accepted once, misses indistinguishable."""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import time
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from control import appkeys
from control.app import create_app
from control.email.sender import read_outbox
from control.invites import service
from control.web.errors import ApiError
from core.ratelimit import Rate
from core.settings import RouteClass, Settings
from core.tokens import TokenKind, new_token
from tests.factories import OPERATOR, TenantFixture, fake_anthropic_key, make_tenant

# What these tests check depends on the database: they run on SQLite and PostgreSQL.
pytestmark = pytest.mark.both_databases


async def _tenant_with_key(client: Any, engine: AsyncEngine) -> TenantFixture:
    tenant = await make_tenant(engine, "Acme Hiring")
    async with client.post("/v1/keys", json={"api_key": fake_anthropic_key()}, headers=tenant.auth):
        pass
    return tenant


async def _invite(client: Any, tenant: TenantFixture, **extra: Any) -> dict[str, Any]:
    body = {"candidate_email": "Ada@Example.com", "assessment_name": "Backend take-home", **extra}
    async with client.post("/v1/invites", json=body, headers=tenant.auth) as r:
        assert r.status == 201, await r.text()
        return await r.json()


async def test_invite_is_sent_looked_up_and_accepted_once(client: Any, engine: AsyncEngine) -> None:
    tenant = await _tenant_with_key(client, engine)
    invite = await _invite(
        client, tenant, max_requests=40, allowed_server_tools=["web_fetch", "web_fetch"]
    )
    token = invite["invite_token"]
    assert token.startswith("mxi_")
    [email] = await read_outbox(engine, OPERATOR)
    assert email["to_email"] == "ada@example.com"
    assert invite["invite_url"] in email["body"]
    assert "Acme Hiring" in email["subject"]

    async with client.get(f"/v1/invites/{token}") as r:
        assert (r.status, (await r.json())["company"]) == (200, "Acme Hiring")
    async with client.post(f"/v1/invites/{token}/accept") as r:
        accepted = await r.json()
        assert r.status == 201
    assert accepted["sandbox_token"].startswith("mxs_")
    # Nothing the candidate holds can attach a proxy: no bootstrap token, no proxy credential.
    assert set(accepted) == {
        "session_id",
        "control_url",
        "sandbox_token",
        "candidate_token",
        "deadline_at",
    }
    async with client.get(f"/v1/sessions/{accepted['session_id']}", headers=tenant.auth) as r:
        session = await r.json()
    assert session["limits"]["max_requests"] == 40
    assert session["limits"]["allowed_server_tools"] == ["web_fetch"]
    async with client.post(f"/v1/invites/{token}/accept") as r:
        assert r.status == 404  # single use
    async with client.get(f"/v1/invites/{token}") as r:
        assert r.status == 404
    async with client.get("/v1/audit?action=invite:create,invite:accept", headers=tenant.auth) as r:
        actions = [e["action"] for e in (await r.json())["events"]]
    assert actions == ["invite:accept", "invite:create"]


async def test_unknown_malformed_and_expired_tokens_get_the_same_answer(
    client: Any, engine: AsyncEngine
) -> None:
    tenant = await _tenant_with_key(client, engine)
    invite = await _invite(client, tenant, expires_in_hours=1)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    with pytest.raises(ApiError) as expired:  # the same 404 the API renders
        await service.lookup_invite(engine, invite["invite_token"], now=later)
    assert expired.value.status == 404
    expired_message = expired.value.message
    bodies = set()
    for token in (new_token(TokenKind.INVITE), "not-a-token", "mxi_short"):
        async with client.get(f"/v1/invites/{token}") as r:
            assert r.status == 404
            bodies.add(await r.text())
    assert len(bodies) == 1
    assert expired_message in bodies.pop()


async def test_lookup_time_does_not_tell_a_near_miss_from_garbage(
    aiohttp_client: Any, settings: Settings, engine: AsyncEngine
) -> None:
    """A miss costs the same work whatever the token: one indexed query by hash.

    Checked twice: the statements each lookup runs are the same (a count, not a clock),
    and over interleaved pairs neither token is consistently the slower (a sign test,
    which machine load moves for both alike). (The guard is relaxed here: the misses would
    otherwise get the address blocked.)"""
    relaxed = dataclasses.replace(
        settings,
        block_allowlist=(ipaddress.ip_network("127.0.0.0/8"),),
        rate_limits={**settings.rate_limits, RouteClass.TOKEN: Rate(1000, 60)},
    )
    client = await aiohttp_client(create_app(relaxed))
    tenant = await _tenant_with_key(client, engine)
    real = (await _invite(client, tenant))["invite_token"]
    near_miss = real[:-1] + ("A" if real[-1] != "A" else "B")
    statements: list[str] = []

    def trace(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    app_engine = client.app[appkeys.engine].sync_engine

    async def lookup_ms(token: str) -> float:
        start = time.perf_counter()
        async with client.get(f"/v1/invites/{token}") as r:
            await r.read()
            assert r.status == 404  # a lookup, not a rate-limit or block refusal
        return (time.perf_counter() - start) * 1000

    async def statements_of(token: str) -> list[str]:
        statements.clear()
        event.listen(app_engine, "before_cursor_execute", trace)
        try:
            await lookup_ms(token)
        finally:
            event.remove(app_engine, "before_cursor_execute", trace)
        return list(statements)

    # The member's requests above left access rows: written now, not while tracing.
    await client.app[appkeys.access_log].flush()
    near_statements = await statements_of(near_miss)
    assert near_statements  # the lookup reached the database
    assert near_statements == await statements_of("garbage")

    pairs = 60
    near_slower = 0
    for i in range(pairs):
        order = (near_miss, "garbage") if i % 2 == 0 else ("garbage", near_miss)
        first, second = await lookup_ms(order[0]), await lookup_ms(order[1])
        near, garbage = (first, second) if order[0] == near_miss else (second, first)
        near_slower += near > garbage
    # With no difference the count is Binomial(60, 1/2): outside [12, 48] about once in
    # 10^5 runs. A miss that did more work for a near token would be slower nearly always.
    assert 0.2 * pairs <= near_slower <= 0.8 * pairs, near_slower


async def test_accept_needs_a_live_key(client: Any, engine: AsyncEngine) -> None:
    tenant = await _tenant_with_key(client, engine)
    invite = await _invite(client, tenant)
    async with client.get("/v1/keys", headers=tenant.auth) as r:
        key_id = (await r.json())["keys"][0]["id"]
    async with client.delete(f"/v1/keys/{key_id}", headers=tenant.auth):
        pass
    async with client.post(f"/v1/invites/{invite['invite_token']}/accept") as r:
        assert r.status == 409
    async with client.get(f"/v1/invites/{invite['invite_token']}") as r:
        assert r.status == 200  # still valid once a key is uploaded


async def test_invites_are_tenant_scoped(client: Any, engine: AsyncEngine) -> None:
    tenant = await _tenant_with_key(client, engine)
    await _invite(client, tenant)
    other = await make_tenant(engine, "Other")
    async with client.get("/v1/invites", headers=other.auth) as r:
        assert (await r.json())["invites"] == []
    async with client.get("/v1/invites", headers=tenant.auth) as r:
        assert len((await r.json())["invites"]) == 1


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        ({"allowed_models": ["m" * 201]}, "allowed_models"),
        ({"allowed_betas": ["Not A Beta"]}, "allowed_betas"),
        ({"max_requests": 0}, "max_requests"),
        ({"allowed_server_tools": ["shell"]}, "allowed_server_tools"),
    ],
    ids=["model-name-too-long", "bad-beta-name", "no-requests", "unknown-server-tool"],
)
async def test_an_invite_checks_its_limits_as_a_session_does(
    client: Any, engine: AsyncEngine, limits: dict[str, Any], field: str
) -> None:
    tenant = await _tenant_with_key(client, engine)
    body = {"candidate_email": "ada@example.com", "assessment_name": "Backend", **limits}
    async with client.post("/v1/invites", json=body, headers=tenant.auth) as r:
        assert r.status == 422
        assert field in await r.text()
    async with client.get("/v1/invites", headers=tenant.auth) as r:
        assert (await r.json())["invites"] == []
