"""Redis key, channel and stream names of the control plane (proxies never use Redis).

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
        """Pub/sub channel waking the signal streams of one session's proxy, on every
        control-plane replica (control/sessions/signals.py)."""
        return f"{self.prefix}session:{session_id}:signals"

    def liveness_key(self, session_id: str) -> str:
        """The epoch of the session's proxy whose signal stream is open, with a TTL."""
        return f"{self.prefix}session:{session_id}:proxy"

    def oidc_login_key(self, state_hash: str) -> str:
        """A console sign-in in flight: its nonce, PKCE verifier and landing page, briefly."""
        return f"{self.prefix}oidc-login:{state_hash}"

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
