"""Redis key, channel and stream names shared by the control plane and the proxies.

Every name starts with a prefix (default "metrux:") so several installations, or parallel
test runs, can share one Redis server without seeing each other's data.
"""

from __future__ import annotations

import dataclasses

DEFAULT_PREFIX = "metrux:"


@dataclasses.dataclass(frozen=True, slots=True)
class RedisNames:
    prefix: str = DEFAULT_PREFIX

    @property
    def usage_stream(self) -> str:
        """Usage records from every proxy, read by the control plane's consumer group."""
        return f"{self.prefix}usage"

    @property
    def usage_group(self) -> str:
        return f"{self.prefix}ingest"

    def session_channel(self, session_id: str) -> str:
        """Pub/sub channel carrying core.signals.Signal values for one session."""
        return f"{self.prefix}session:{session_id}:signals"

    def session_state_key(self, session_id: str) -> str:
        """The session's lifecycle state, re-read by the proxy so a missed signal is obeyed."""
        return f"{self.prefix}session:{session_id}:state"

    def grader_key(self, session_id: str) -> str:
        """SHA-256 of the session's current grader token, for proxies already running."""
        return f"{self.prefix}session:{session_id}:grader"

    def liveness_key(self, session_id: str) -> str:
        """Refreshed with a TTL while the session's proxy runs."""
        return f"{self.prefix}session:{session_id}:proxy"

    def block_key(self, ip: str) -> str:
        """A blocked client IP; the value describes the block, the TTL is its end."""
        return f"{self.prefix}block:{ip}"

    def failure_key(self, dimension: str, subject: str) -> str:
        """Failed credential checks in the current window, per IP or per target."""
        return f"{self.prefix}fail:{dimension}:{subject}"

    def offence_key(self, ip: str) -> str:
        """How often an IP was blocked lately (each block lasts twice the one before)."""
        return f"{self.prefix}offences:{ip}"

    def rate_key(self, route_class: str, dimension: str, subject: str) -> str:
        """One GCRA timestamp per route class and IP or identity."""
        return f"{self.prefix}rl:{route_class}:{dimension}:{subject}"
