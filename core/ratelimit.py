"""Rate limits in Redis: GCRA (the generic cell rate algorithm), one Lua script per check.

Each limited key holds one timestamp, the theoretical arrival time (TAT), and expires when
the bucket would be full again, so idle keys cost nothing. The script reads Redis's own
clock (`TIME`), so replicas with skewed clocks agree, and it checks every key of a request
(per IP and per identity) and a blocklist entry atomically: either all keys admit the
request and all advance, or none does.

`Rate("30/60")` means 30 requests per 60 seconds, all 30 allowed at once.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # settings import Rate from here, and proxies must not load redis-py
    from redis.asyncio import Redis

# KEYS[1]: the blocklist entry (checked first; any value blocks, its TTL is the answer).
# KEYS[2..n]: limiter keys. ARGV[1]: how many requests this is; ARGV[2]: 1 to record them
# even past the limit (requests already made, reported afterwards); then the emission
# interval and burst (ms, count) of each key.
# Returns {0, remaining, reset_ms, limit} when admitted, {1, block_ttl_ms} when blocked,
# {2, retry_after_ms, reset_ms, limit, index} when a limit refused (nothing advanced,
# unless recording was forced).
_SCRIPT = """
local block_ttl = redis.call('PTTL', KEYS[1])
if block_ttl > 0 or block_ttl == -1 then
  return {1, block_ttl}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local quantity = tonumber(ARGV[1])
local force = ARGV[2] == '1'
local new_tats = {}
local refusal = nil
local remaining, reset, limit = -1, 0, 0
for i = 2, #KEYS do
  local interval = tonumber(ARGV[(i - 2) * 2 + 3])
  local burst = tonumber(ARGV[(i - 2) * 2 + 4])
  local tolerance = interval * burst
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval * quantity
  local allow_at = new_tat - tolerance
  if now < allow_at and refusal == nil then
    refusal = {2, allow_at - now, tat - now, burst, i - 1}
    if not force then return refusal end
  end
  new_tats[i] = new_tat
  local left = math.floor((tolerance - (new_tat - now)) / interval)
  if remaining < 0 or left < remaining then
    remaining, reset, limit = left, new_tat - now, burst
  end
end
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], new_tats[i], 'PX', math.max(1, new_tats[i] - now))
end
if refusal ~= nil then return refusal end
return {0, math.max(remaining, 0), reset, limit}
"""

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, None: 1}


@dataclasses.dataclass(frozen=True, slots=True)
class Rate:
    """`count` requests per `period_s` seconds, `count` of them allowed at once."""

    count: int
    period_s: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        """'30/60' (per 60 s), '30/1m', '1000/1h'."""
        match = _RATE.match(text)
        if match is None:
            raise ValueError(f"rate {text!r} is not COUNT/PERIOD, such as 30/60 or 30/1m")
        count, period, unit = int(match[1]), float(match[2]), match[3]
        if count < 1 or period <= 0:
            raise ValueError(f"rate {text!r} must allow at least one request per period")
        return cls(count, period * _UNIT[unit])

    @property
    def interval_ms(self) -> int:
        return max(1, round(self.period_s * 1000 / self.count))

    def __str__(self) -> str:
        return f"{self.count}/{self.period_s:g}s"


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int = 0
    remaining: int = 0
    reset_s: float = 0.0
    retry_after_s: float = 0.0
    blocked: bool = False
    refused_by: int | None = None  # index into the checked limits

    def headers(self) -> dict[str, str]:
        """IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers), plus Retry-After
        on a refusal; seconds are whole and rounded up."""
        out = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset_s)),
        }
        if not self.allowed:
            out["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return out


class RateLimiter:
    """Check a request against its limits (and the blocklist) in one round trip."""

    def __init__(self, redis: Redis) -> None:
        self._script = redis.register_script(_SCRIPT)

    async def check(
        self,
        block_key: str,
        limits: Sequence[tuple[str, Rate]],
        *,
        quantity: int = 1,
        record_anyway: bool = False,
    ) -> Decision:
        """Admit `quantity` requests, or refuse them all. With `record_anyway` (requests
        already made, reported in a batch) they are charged even past the limit, and the
        decision says how long to hold off."""
        keys = [block_key, *(key for key, _ in limits)]
        args: list[int] = [quantity, 1 if record_anyway else 0]
        for _, rate in limits:
            args += [rate.interval_ms, rate.count]
        result = await self._script(keys=keys, args=args)
        kind = int(result[0])
        if kind == 1:
            ttl = int(result[1])
            return Decision(allowed=False, blocked=True, retry_after_s=ttl / 1000 if ttl > 0 else 0)
        if kind == 2:
            return Decision(
                allowed=False,
                retry_after_s=int(result[1]) / 1000,
                reset_s=int(result[2]) / 1000,
                limit=int(result[3]),
                remaining=0,
                refused_by=int(result[4]) - 1,
            )
        if not limits:
            return Decision(allowed=True)
        return Decision(
            allowed=True,
            remaining=int(result[1]),
            reset_s=int(result[2]) / 1000,
            limit=int(result[3]),
        )
