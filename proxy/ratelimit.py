"""The proxy's request-rate limit, kept in Redis with the control plane's GCRA script, per
caller (candidate or grader) and per client address of this session.

Redis is the shared record, so the limit survives a proxy restart and a blocklisted
address is refused here as well. If Redis does not answer within LIMITER_TIMEOUT_S the
proxy fails open to its in-process token bucket (same rate), logs once, and counts it, so
a Redis outage never stops an assessment (SECURITY-CHECKS.md C54).
"""

from __future__ import annotations

import asyncio

import structlog
from redis.exceptions import RedisError

from core.ratelimit import Rate, RateLimiter
from core.redis_names import RedisNames
from proxy.errors import ProxyError
from proxy.limits import TokenBucket

log = structlog.get_logger(__name__)
LIMITER_TIMEOUT_S = 0.05


class SharedRateLimit:
    def __init__(
        self,
        limiter: RateLimiter | None,
        names: RedisNames,
        session_id: str,
        rate_per_s: float,
        burst: int,
    ) -> None:
        self._limiter = limiter
        self._names = names
        self._session = session_id
        self._rate = Rate(burst, burst / rate_per_s)
        self._local = TokenBucket(rate_per_s, burst)
        self.fallbacks = 0

    async def wait_time(self, ip: str, actor: str) -> float | None:
        """None if the call may go ahead, else seconds to wait; 403 for a blocked address."""
        if self._limiter is None:
            return self._local.take()
        scope = f"{self._session}:{actor}"
        limits = [
            (self._names.rate_key("proxy", "id", scope), self._rate),
            (self._names.rate_key("proxy", "ip", f"{self._session}:{ip}"), self._rate),
        ]
        try:
            async with asyncio.timeout(LIMITER_TIMEOUT_S):
                decision = await self._limiter.check(self._names.block_key(ip), limits)
        except (RedisError, OSError, TimeoutError) as exc:
            if self.fallbacks == 0:
                log.warning("proxy_rate_limit_local_fallback", error=type(exc).__name__)
            self.fallbacks += 1
            return self._local.take()
        if decision.blocked:
            raise ProxyError(403, "permission_error", "requests from this address are blocked")
        return None if decision.allowed else max(decision.retry_after_s, 0.001)
