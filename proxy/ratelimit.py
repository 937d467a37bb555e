"""The proxy's request-rate limit: decided in this process, recorded in Redis.

The proxy is the only process serving its session, so its in-process token bucket is
exact and answers with no round trip. Admitted calls are also charged in Redis with the
control plane's GCRA script (per caller and per client address of the session), in
batches every FLUSH_INTERVAL_S: Redis keeps the limit across a proxy restart or reconnect
and carries the shared blocklist. When Redis says the session is over its limit or the
address is blocked, that holds here from then on. When Redis is down or slow the
in-process limit goes on alone (fail open), logged once and counted (SECURITY-CHECKS.md
C54).

Measured (bench/proxy_overhead.py): awaiting Redis on every call added 0.3 ms to the p50
latency and 0.7 ms to a stream's first byte; one background check per call cost 0.36 ms
of CPU per call. Batched, a session costs Redis at most ten round trips a second.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from redis.exceptions import RedisError

from core.ratelimit import Rate, RateLimiter
from core.redis_names import RedisNames
from core.tasks import spawn
from proxy.errors import ProxyError
from proxy.limits import TokenBucket

log = structlog.get_logger(__name__)
LIMITER_TIMEOUT_S = 0.5
FLUSH_INTERVAL_S = 0.1
BLOCKED_FOREVER_S = 365 * 24 * 3600.0


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
        self._refuse_until = 0.0
        self._blocked_until = 0.0
        self._unreported: dict[tuple[str, str], int] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._settled = asyncio.Event()
        self._settled.set()
        self.fallbacks = 0

    def wait_time(self, ip: str, actor: str) -> float | None:
        """None if the call may go ahead, else seconds to wait; 403 for a blocked address."""
        now = time.monotonic()
        if now < self._blocked_until:
            raise ProxyError(403, "permission_error", "requests from this address are blocked")
        if now < self._refuse_until:
            return self._refuse_until - now
        wait = self._local.take()
        if wait is None and self._limiter is not None:
            key = (ip, actor)
            self._unreported[key] = self._unreported.get(key, 0) + 1
            if self._flusher is None:
                self._settled.clear()
                self._flusher = spawn(self._flush_soon(), name="proxy-rate-flush")
        return wait

    async def settled(self) -> None:
        """Wait until every admitted call has been charged in Redis (tests, shutdown)."""
        await self._settled.wait()

    async def _flush_soon(self) -> None:
        try:
            while self._unreported:
                await asyncio.sleep(FLUSH_INTERVAL_S)  # the batching window
                batch, self._unreported = self._unreported, {}
                for (ip, actor), count in batch.items():
                    await self._charge(ip, actor, count)
        finally:
            self._flusher = None
            self._settled.set()

    async def _charge(self, ip: str, actor: str, count: int) -> None:
        assert self._limiter is not None
        limits = [
            (self._names.rate_key("proxy", "id", f"{self._session}:{actor}"), self._rate),
            (self._names.rate_key("proxy", "ip", f"{self._session}:{ip}"), self._rate),
        ]
        try:
            async with asyncio.timeout(LIMITER_TIMEOUT_S):
                decision = await self._limiter.check(
                    self._names.block_key(ip), limits, quantity=count, record_anyway=True
                )
        except (RedisError, OSError, TimeoutError) as exc:
            if self.fallbacks == 0:
                log.warning("proxy_rate_limit_local_only", error=type(exc).__name__)
            self.fallbacks += 1
            return
        now = time.monotonic()
        if decision.blocked:
            seconds = decision.retry_after_s if decision.retry_after_s > 0 else BLOCKED_FOREVER_S
            self._blocked_until = now + seconds
        elif not decision.allowed:
            self._refuse_until = max(self._refuse_until, now + decision.retry_after_s)
