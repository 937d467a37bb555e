"""The guard layer: client IP behind trusted proxies, GCRA rate limits in Redis, and the
brute-force blocklist (SECURITY-CHECKS.md C49-C56)."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
from typing import Any

import pytest
from redis.asyncio import BlockingConnectionPool, Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from control import appkeys
from control.app import create_app
from control.db.schema import audit_events
from control.web.client_ip import resolve_client_ip
from core.ratelimit import Rate, RateLimiter
from core.settings import RouteClass, Settings
from tests.factories import METRICS_AUTH, make_tenant

TRUSTED = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.0.0.0/8"))


def test_forwarded_for_counts_only_from_a_trusted_peer() -> None:
    assert resolve_client_ip("203.0.113.9", ["1.2.3.4"], TRUSTED) == "203.0.113.9"
    assert resolve_client_ip("127.0.0.1", ["1.2.3.4"], TRUSTED) == "1.2.3.4"
    # The client prepends a forged hop; the rightmost untrusted hop is the client.
    assert resolve_client_ip("127.0.0.1", ["6.6.6.6, 198.51.100.7, 10.1.2.3"], TRUSTED) == (
        "198.51.100.7"
    )
    assert resolve_client_ip("127.0.0.1", ["not-an-ip"], TRUSTED) == "127.0.0.1"
    assert resolve_client_ip("::ffff:127.0.0.1", [], TRUSTED) == "127.0.0.1"
    assert resolve_client_ip("127.0.0.1", [], ()) == "127.0.0.1"


def test_rates_parse_and_refuse_nonsense() -> None:
    assert Rate.parse("30/60") == Rate(30, 60)
    assert Rate.parse("30/1m") == Rate(30, 60)
    assert Rate.parse("1000/1h").interval_ms == 3600
    for bad in ("", "30", "0/60", "x/60", "30/0"):
        with pytest.raises(ValueError, match="rate"):
            Rate.parse(bad)


async def test_exactly_the_limit_is_admitted_under_concurrency(redis_url: str) -> None:
    """C50: 200 concurrent checks for one identity with limit 50: exactly 50 pass, and the
    refusals say when to come back."""
    redis = Redis(connection_pool=BlockingConnectionPool.from_url(redis_url, max_connections=50))
    limiter = RateLimiter(redis)
    key = f"metrux-test-rl-{id(limiter)}"
    try:
        decisions = await asyncio.gather(
            *(limiter.check(key + ":block", [(key, Rate(50, 60))]) for _ in range(200))
        )
        assert sum(d.allowed for d in decisions) == 50
        refused = [d for d in decisions if not d.allowed]
        assert all(0 < d.retry_after_s <= 1.2 for d in refused)  # one interval: 1.2 s
        assert all(d.headers()["Retry-After"] == "2" for d in refused)
        assert await redis.pttl(key) > 0  # every limiter key expires
    finally:
        await redis.delete(key)
        await redis.aclose()


async def test_a_refusal_on_one_key_advances_none(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    limiter = RateLimiter(redis)
    ip_key, id_key = f"metrux-test-ip-{id(redis)}", f"metrux-test-id-{id(redis)}"
    try:
        assert (await limiter.check("none", [(id_key, Rate(1, 60))])).allowed
        refused = await limiter.check("none", [(ip_key, Rate(5, 60)), (id_key, Rate(1, 60))])
        assert not refused.allowed
        assert refused.refused_by == 1
        # The IP key was not charged for the refused request: all 5 remain.
        decision = await limiter.check("none", [(ip_key, Rate(5, 60))])
        assert decision.remaining == 4
    finally:
        await redis.delete(ip_key, id_key)
        await redis.aclose()


def _guarded(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(settings, trusted_proxies=TRUSTED, **changes)


async def test_token_routes_are_limited_per_ip_with_headers(
    aiohttp_client: Any, settings: Settings
) -> None:
    limits = {**settings.rate_limits, RouteClass.TOKEN: Rate(3, 60)}
    client = await aiohttp_client(create_app(_guarded(settings, rate_limits=limits)))
    me = {"X-Forwarded-For": "198.51.100.1"}
    statuses = []
    for _ in range(4):
        async with client.get("/v1/invites/mxi_unknown", headers=me) as r:
            statuses.append(r.status)
            headers, body = r.headers, await r.json()
    assert statuses == [404, 404, 404, 429]
    assert headers["RateLimit-Limit"] == "3"
    assert headers["RateLimit-Remaining"] == "0"
    assert int(headers["Retry-After"]) >= 1
    assert body["error"]["type"] == "rate_limit_error"
    # Another client address has its own budget.
    async with client.get(
        "/v1/invites/mxi_unknown", headers={"X-Forwarded-For": "198.51.100.2"}
    ) as r:
        assert r.status == 404
        assert r.headers["RateLimit-Remaining"] == "2"


async def test_a_forged_forwarded_for_from_an_untrusted_peer_changes_nothing(
    aiohttp_client: Any, settings: Settings
) -> None:
    """C51: the test client's peer is 127.0.0.1, which is not trusted here."""
    limits = {**settings.rate_limits, RouteClass.TOKEN: Rate(2, 60)}
    client = await aiohttp_client(create_app(dataclasses.replace(settings, rate_limits=limits)))
    statuses = []
    for n in range(3):
        headers = {"X-Forwarded-For": f"203.0.113.{n}"}
        async with client.get("/v1/invites/mxi_unknown", headers=headers) as r:
            statuses.append(r.status)
    assert statuses == [404, 404, 429]


async def test_member_calls_are_limited_per_credential_across_addresses(
    aiohttp_client: Any, settings: Settings, engine: AsyncEngine
) -> None:
    limits = {**settings.rate_limits, RouteClass.READ: Rate(2, 60)}
    client = await aiohttp_client(create_app(_guarded(settings, rate_limits=limits)))
    tenant = await make_tenant(engine)
    statuses = []
    for n in range(3):
        headers = {**tenant.auth, "X-Forwarded-For": f"198.51.100.{n}"}
        async with client.get("/v1/keys", headers=headers) as r:
            statuses.append(r.status)
    assert statuses == [200, 200, 429]
    async with client.get("/healthz") as r:  # ops probes are never limited
        assert r.status == 200
        assert "RateLimit-Limit" not in r.headers


@dataclasses.dataclass
class _Row:
    target_id: str
    details: dict[str, Any]


async def _audit(engine: AsyncEngine, action: str) -> list[_Row]:
    async with engine.connect() as conn:
        query = select(audit_events).where(audit_events.c.action == action)
        rows = (await conn.execute(query.order_by(audit_events.c.id))).all()
    return [
        _Row(
            row.target_id, row.details if isinstance(row.details, dict) else json.loads(row.details)
        )
        for row in rows
    ]


async def test_brute_force_on_invite_tokens_blocks_the_address_not_the_candidate(
    aiohttp_client: Any, settings: Settings, engine: AsyncEngine
) -> None:
    """C52, C56: after N bad invite tokens the address is blocked (403 before any lookup,
    audited, longer on a repeat); a good token from another address still works."""
    guarded = _guarded(settings, block_after=5, block_for_s=60)
    client = await aiohttp_client(create_app(guarded))
    tenant = await make_tenant(engine)
    async with client.post("/v1/keys", json={"api_key": _key()}, headers=tenant.auth) as r:
        assert r.status == 201
    async with client.post(
        "/v1/invites",
        json={"candidate_email": "c@example.com", "assessment_name": "Take-home"},
        headers=tenant.auth,
    ) as r:
        good = (await r.json())["invite_token"]
    attacker = {"X-Forwarded-For": "198.51.100.66"}
    statuses = []
    for n in range(6):
        async with client.get(f"/v1/invites/mxi_guess{n}", headers=attacker) as r:
            statuses.append(r.status)
    assert statuses == [404] * 5 + [403]
    async with client.get(f"/v1/invites/{good}", headers=attacker) as r:
        assert r.status == 403  # refused before the lookup: even a good token
        assert (await r.json())["error"]["message"] == "requests from this address are blocked"
    async with client.get(f"/v1/invites/{good}", headers={"X-Forwarded-For": "198.51.100.7"}) as r:
        assert r.status == 200
    [block] = await _audit(engine, "ip:block")
    assert (block.target_id, block.details["seconds"], block.details["offence"]) == (
        "198.51.100.66",
        60,
        1,
    )
    # A repeat offence after the block ends doubles it.
    redis = client.app[appkeys.redis]
    await redis.delete(client.app[appkeys.names].block_key("198.51.100.66"))
    for n in range(5):
        async with client.get(f"/v1/invites/mxi_again{n}", headers=attacker) as r:
            assert r.status == 404
    second = (await _audit(engine, "ip:block"))[-1]
    assert (second.details["seconds"], second.details["offence"]) == (120, 2)
    blocks = await client.app[appkeys.blocklist].list()
    assert [(b.ip, b.seconds) for b in blocks] == [("198.51.100.66", 120)]
    assert 0 < (blocks[0].remaining_s or 0) <= 120


async def test_bad_member_tokens_count_and_allowlisted_networks_are_never_blocked(
    aiohttp_client: Any, settings: Settings, engine: AsyncEngine
) -> None:
    allow = (ipaddress.ip_network("192.0.2.0/24"),)
    client = await aiohttp_client(
        create_app(_guarded(settings, block_after=3, block_allowlist=allow))
    )
    for ip, expected in (("198.51.100.9", [401, 401, 401, 403]), ("192.0.2.5", [401] * 4)):
        statuses = []
        for n in range(4):
            headers = {"Authorization": f"Bearer mxk_wrong{n}", "X-Forwarded-For": ip}
            async with client.get("/v1/keys", headers=headers) as r:
                statuses.append(r.status)
        assert statuses == expected, ip
    assert [row.target_id for row in await _audit(engine, "ip:block")] == ["198.51.100.9"]


async def test_attacks_on_one_session_from_many_addresses_are_blocked(
    aiohttp_client: Any, settings: Settings
) -> None:
    """Per target: failures against one session id from many addresses."""
    client = await aiohttp_client(create_app(_guarded(settings, block_target_after=3)))
    statuses = []
    for n in range(5):
        headers = {"Authorization": f"Bearer mxb_guess{n}", "X-Forwarded-For": f"198.51.100.{n}"}
        async with client.post("/internal/v1/sessions/ses_target/attach", headers=headers) as r:
            statuses.append(r.status)
    assert statuses[:3] == [401, 401, 401]
    # Past the target's threshold, each further failing address is blocked at once.
    async with client.post(
        "/internal/v1/sessions/ses_target/attach", headers={"X-Forwarded-For": "198.51.100.3"}
    ) as r:
        assert r.status == 403


async def test_without_redis_token_routes_fail_closed_and_the_rest_open(
    aiohttp_client: Any, settings: Settings, engine: AsyncEngine
) -> None:
    """C54: the limiter's Redis is unreachable."""
    dead = dataclasses.replace(settings, redis_url="redis://127.0.0.1:9/0")
    client = await aiohttp_client(create_app(dead))
    tenant = await make_tenant(engine)
    async with client.get("/v1/invites/mxi_anything") as r:
        assert r.status == 503
        assert r.headers["Retry-After"] == "5"
    async with client.get("/v1/keys", headers=tenant.auth) as r:
        assert r.status == 200
    async with client.get("/metrics", headers=METRICS_AUTH) as r:
        assert "metrux_rate_limiter_unavailable_total 2.0" in await r.text()


def _key() -> str:
    from tests.factories import fake_anthropic_key

    return fake_anthropic_key()
