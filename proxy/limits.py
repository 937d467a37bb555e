"""Per-session limits, enforced before a call is forwarded. Pure: no I/O, clock injectable.

- a request-rate token bucket (generous enough for Claude Code's startup burst of dozens of
  count_tokens calls);
- the session's max requests, allowed models and output-token budget; the budget is
  reserved at the request's `max_tokens` before forwarding, so concurrent calls cannot
  overshoot it, and settled to the real output tokens afterwards;
- a lockout for sources that keep presenting bad tokens, which never touches a caller
  holding the right token.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import deque
from collections.abc import Callable

from core.usage import UsageRecord, charged_output_tokens
from proxy.errors import ProxyError

Clock = Callable[[], float]


class TokenBucket:
    __slots__ = ("_burst", "_clock", "_rate", "_tokens", "_updated")

    def __init__(self, rate_per_s: float, burst: int, clock: Clock = time.monotonic) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._updated = clock()

    def take(self) -> float | None:
        """Take one token; None if allowed, else seconds until one is available."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            return None
        return (1 - self._tokens) / self._rate


def too_many(message: str, retry_after: float) -> ProxyError:
    seconds = max(1, math.ceil(retry_after))
    return ProxyError(
        429,
        "rate_limit_error",
        message,
        headers={"retry-after": str(seconds), "x-should-retry": "true"},
    )


@dataclasses.dataclass(slots=True)
class Reservation:
    output_tokens: int


class SessionBudget:
    """Request count and output-token budget for one session (None: unlimited). It starts
    from what the control plane's records say the session already spent (the attach grant),
    so a reconnect does not bring a fresh budget."""

    def __init__(
        self,
        *,
        max_requests: int | None,
        max_output_tokens: int | None,
        allowed_models: list[str] | None,
        spent_requests: int = 0,
        spent_output_tokens: int = 0,
    ) -> None:
        self.max_requests = max_requests
        self.max_output_tokens = max_output_tokens
        self.allowed_models = frozenset(allowed_models) if allowed_models else None
        self.requests = spent_requests
        self.output_used = spent_output_tokens
        self.output_reserved = 0

    def check_model(self, model: str | None) -> None:
        if self.allowed_models is not None and model not in self.allowed_models:
            allowed = ", ".join(sorted(self.allowed_models))
            raise ProxyError(
                403,
                "permission_error",
                f"model {model!r} is not allowed in this session ({allowed})",
            )

    def admit(self, max_tokens: int | None) -> Reservation:
        """Count a generation call and reserve its max_tokens, or refuse it."""
        if self.max_requests is not None and self.requests >= self.max_requests:
            raise ProxyError(
                403, "permission_error", f"session request limit reached ({self.max_requests})"
            )
        reserve = max_tokens or 0
        if self.max_output_tokens is not None:
            remaining = self.max_output_tokens - self.output_used - self.output_reserved
            if reserve > remaining:
                raise ProxyError(
                    403,
                    "permission_error",
                    f"max_tokens {reserve} exceeds the session's remaining output-token "
                    f"budget ({max(remaining, 0)} of {self.max_output_tokens})",
                )
        self.requests += 1
        self.output_reserved += reserve
        return Reservation(reserve)

    def settle(self, reservation: Reservation, record: UsageRecord | None) -> None:
        """Release the reservation and charge what the call counts: what was produced, or
        the whole reservation for a call that did not complete (core.usage)."""
        self.output_reserved -= reservation.output_tokens
        if record is None:  # no record: the call never got as far as the meter
            self.output_used += reservation.output_tokens
            return
        self.output_used += charged_output_tokens(
            complete=record.complete,
            http_status=record.http_status,
            output_tokens=record.output_tokens,
            reserved=reservation.output_tokens,
        )


class BadTokenLockout:
    """fail2ban-style: `threshold` bad tokens from one source within `window` seconds lock
    it out; each repeat doubles the lockout up to `max_lockout`."""

    def __init__(
        self,
        *,
        threshold: int = 20,
        window: float = 60.0,
        lockout: float = 30.0,
        max_lockout: float = 900.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._threshold = threshold
        self._window = window
        self._lockout = lockout
        self._max_lockout = max_lockout
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}
        self._strikes: dict[str, int] = {}

    def retry_after(self, source: str) -> float | None:
        """Seconds the source remains locked out, or None."""
        until = self._locked_until.get(source)
        if until is None:
            return None
        remaining = until - self._clock()
        if remaining <= 0:
            del self._locked_until[source]
            return None
        return remaining

    def record_failure(self, source: str) -> None:
        now = self._clock()
        failures = self._failures.setdefault(source, deque())
        failures.append(now)
        while failures and failures[0] < now - self._window:
            failures.popleft()
        if len(failures) >= self._threshold:
            strikes = self._strikes.get(source, 0)
            self._strikes[source] = strikes + 1
            self._locked_until[source] = now + min(self._lockout * 2**strikes, self._max_lockout)
            failures.clear()
