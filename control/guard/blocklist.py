"""The IP blocklist and brute-force detection, in Redis (shared by every replica).

Failed credential checks (bad member, candidate, bootstrap or sandbox tokens, unknown
invite tokens) are counted per client IP and per attacked target (a session id) in a fixed
window. Past the IP threshold, or when a target under attack gets one more failure past
its threshold, the IP is blocked; each offence within 30 days doubles the block, up to a
cap (fail2ban's `bantime.increment`). Blocked addresses get 403 before any work. Blocks
and unblocks are audited. Allowlisted networks are never blocked.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from control.audit import store as audit
from control.audit.actions import AuditAction
from control.audit.store import Actor
from control.web.client_ip import Network, is_within
from core.redis_names import RedisNames
from core.settings import Settings

OFFENCE_MEMORY_S = 30 * 24 * 3600

# KEYS: ip counter, target counter (or ""), offences, block entry.
# ARGV: window ms, ip threshold, target threshold, base block ms, cap ms, offence TTL ms,
#       entry JSON prefix (completed here with the block's length).
_RECORD_FAILURE = """
local window = tonumber(ARGV[1])
local ip_count = redis.call('INCR', KEYS[1])
if ip_count == 1 then redis.call('PEXPIRE', KEYS[1], window) end
local target_count = 0
if KEYS[2] ~= '' then
  target_count = redis.call('INCR', KEYS[2])
  if target_count == 1 then redis.call('PEXPIRE', KEYS[2], window) end
end
if ip_count < tonumber(ARGV[2]) and (KEYS[2] == '' or target_count <= tonumber(ARGV[3])) then
  return {0, ip_count, target_count, 0, 0}
end
local offences = redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[6]))
local length = math.min(tonumber(ARGV[4]) * 2 ^ (offences - 1), tonumber(ARGV[5]))
redis.call('SET', KEYS[4], ARGV[7] .. ',"seconds":' .. math.floor(length / 1000) .. '}',
  'PX', math.floor(length))
redis.call('DEL', KEYS[1])
return {1, ip_count, target_count, math.floor(length), offences}
"""


@dataclasses.dataclass(frozen=True, slots=True)
class BlockPolicy:
    ip_threshold: int = 20  # failures from one IP within the window
    target_threshold: int = 10  # failures against one target within the window
    window_s: int = 600
    block_s: int = 900  # the first block; doubled per offence
    max_block_s: int = 7 * 24 * 3600
    allowlist: tuple[Network, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> BlockPolicy:
        return cls(
            ip_threshold=settings.block_after,
            target_threshold=settings.block_target_after,
            window_s=settings.block_window_s,
            block_s=settings.block_for_s,
            max_block_s=settings.block_max_s,
            allowlist=settings.block_allowlist,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Block:
    ip: str
    reason: str
    source: str  # "detector" or "operator"
    blocked_at: str
    seconds: int
    remaining_s: float | None  # None: until removed


class Blocklist:
    def __init__(
        self, redis: Redis, names: RedisNames, engine: AsyncEngine, policy: BlockPolicy
    ) -> None:
        self._redis = redis
        self._names = names
        self._engine = engine
        self.policy = policy
        self._record = redis.register_script(_RECORD_FAILURE)

    def key(self, ip: str) -> str:
        return self._names.block_key(ip)

    def allowlisted(self, ip: str) -> bool:
        return is_within(ip, self.policy.allowlist)

    async def record_failure(
        self, ip: str, target: str | None, reason: str, actor: Actor
    ) -> Block | None:
        """Count one failed credential check; block the IP (and audit it) past a threshold."""
        if self.allowlisted(ip):
            return None
        now = dt.datetime.now(dt.UTC)
        entry = json.dumps({"reason": reason, "source": "detector", "blocked_at": now.isoformat()})[
            :-1
        ]
        policy = self.policy
        result = await self._record(
            keys=[
                self._names.failure_key("ip", ip),
                self._names.failure_key("target", target) if target else "",
                self._names.offence_key(ip),
                self.key(ip),
            ],
            args=[
                policy.window_s * 1000,
                policy.ip_threshold,
                policy.target_threshold,
                policy.block_s * 1000,
                policy.max_block_s * 1000,
                OFFENCE_MEMORY_S * 1000,
                entry,
            ],
        )
        blocked, ip_count, target_count, length_ms, offences = (int(v) for v in result)
        if not blocked:
            return None
        block = Block(ip, reason, "detector", now.isoformat(), length_ms // 1000, length_ms / 1000)
        details = {
            "reason": reason,
            "seconds": block.seconds,
            "offence": offences,
            "failures_from_ip": ip_count,
            "failures_on_target": target_count,
            "source": "detector",
        }
        await self._audit(AuditAction.IP_BLOCK, ip, actor, details=details)
        return block

    async def add(self, ip: str, seconds: int | None, reason: str, actor: Actor) -> Block:
        now = dt.datetime.now(dt.UTC).isoformat()
        entry = {
            "reason": reason,
            "source": "operator",
            "blocked_at": now,
            "seconds": seconds or 0,
        }
        await self._redis.set(self.key(ip), json.dumps(entry), ex=seconds)
        details: dict[str, object] = {"reason": reason, "seconds": seconds, "source": "operator"}
        await self._audit(AuditAction.IP_BLOCK, ip, actor, details=details)
        return Block(ip, reason, "operator", now, seconds or 0, seconds)

    async def remove(self, ip: str, actor: Actor) -> bool:
        removed = bool(await self._redis.delete(self.key(ip)))
        await self._redis.delete(self._names.failure_key("ip", ip))
        outcome = "success" if removed else "not_found"
        await self._audit(AuditAction.IP_UNBLOCK, ip, actor, outcome=outcome)
        return removed

    async def _audit(
        self,
        action: AuditAction,
        ip: str,
        actor: Actor,
        *,
        details: dict[str, object] | None = None,
        outcome: str = "success",
    ) -> None:
        # Blocks concern an address, not a tenant: the rows are installation-wide.
        async with self._engine.begin() as conn:
            await audit.record(
                conn, actor, action, tenant_id=None, target_type="ip", target_id=ip,
                details=details, outcome=outcome,
            )  # fmt: skip

    async def list(self) -> list[Block]:
        blocks = []
        prefix = self.key("")
        async for raw_key in self._redis.scan_iter(match=prefix + "*", count=500):
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
            value, ttl = await self._redis.get(key), await self._redis.pttl(key)
            if value is None:
                continue  # expired between the scan and the read
            entry = json.loads(value)
            blocks.append(
                Block(
                    ip=key.removeprefix(prefix),
                    reason=entry.get("reason", ""),
                    source=entry.get("source", ""),
                    blocked_at=entry.get("blocked_at", ""),
                    seconds=int(entry.get("seconds") or 0),
                    remaining_s=ttl / 1000 if ttl >= 0 else None,
                )
            )
        return sorted(blocks, key=lambda block: block.blocked_at)
