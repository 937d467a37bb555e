"""The shared rate limiter against a real Redis, as a transcript of decisions. Rates refill
over hours, so nothing here depends on how fast the machine is."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from core.ratelimit import Rate, RateLimiter

SLOW = Rate(3, 3600)  # a burst of 3, one more every 20 minutes


@pytest.fixture
async def limiter(redis_url: str) -> AsyncIterator[tuple[RateLimiter, Redis, str]]:
    redis = Redis.from_url(redis_url)
    prefix = f"metrux-test-{uuid.uuid4().hex[:12]}:"
    yield RateLimiter(redis), redis, prefix
    keys = [key async for key in redis.scan_iter(f"{prefix}*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


async def test_a_burst_is_admitted_then_refused_with_when_to_come_back(
    limiter: tuple[RateLimiter, Redis, str],
) -> None:
    check, _, prefix = limiter
    limits = [(prefix + "tenant", SLOW)]
    decisions = [await check.check(prefix + "block", limits) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions[:3]] == [2, 1, 0]
    refused = decisions[3]
    assert (refused.limit, refused.refused_by) == (3, 0)
    assert 0 < refused.retry_after_s <= SLOW.period_s / SLOW.count
    assert int(refused.headers()["Retry-After"]) >= refused.retry_after_s  # whole seconds, up


async def test_a_refusal_by_one_limit_charges_none_of_them(
    limiter: tuple[RateLimiter, Redis, str],
) -> None:
    check, _, prefix = limiter
    tight, loose = (prefix + "route", Rate(1, 3600)), (prefix + "tenant", SLOW)
    assert (await check.check(prefix + "block", [tight, loose])).allowed
    refused = await check.check(prefix + "block", [loose, tight])
    assert (refused.allowed, refused.refused_by) == (False, 1)
    # The loose limit was not charged for the refused request: two are still left.
    assert (await check.check(prefix + "block", [loose])).remaining == 1


async def test_a_batch_is_admitted_whole_or_not_at_all_unless_recorded_anyway(
    limiter: tuple[RateLimiter, Redis, str],
) -> None:
    check, _, prefix = limiter
    limits = [(prefix + "records", SLOW)]
    assert not (await check.check(prefix + "block", limits, quantity=4)).allowed
    assert (await check.check(prefix + "block", limits, quantity=3)).allowed
    late = await check.check(prefix + "block", limits, quantity=2, record_anyway=True)
    assert not late.allowed  # already made: charged, and told to hold off
    assert not (await check.check(prefix + "block", limits)).allowed


async def test_a_blocked_address_is_refused_before_any_limit(
    limiter: tuple[RateLimiter, Redis, str],
) -> None:
    check, redis, prefix = limiter
    await redis.set(prefix + "block", "1", ex=600)
    decision = await check.check(prefix + "block", [(prefix + "tenant", SLOW)])
    assert (decision.allowed, decision.blocked) == (False, True)
    assert 0 < decision.retry_after_s <= 600
    assert await redis.get(prefix + "tenant") is None  # nothing charged
