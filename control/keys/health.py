"""Key health: what a check's verdict does to a key's status and its next check.

Plain functions, no I/O: the upload path, the background checker and the in-use reports
all decide through these.

    valid       Anthropic accepted the key at its last check
    unverified  Anthropic could not be asked (down, overloaded, timed out); re-checked
                with exponential backoff
    invalid     Anthropic refused the key (401 authentication_error or 403
                permission_error); new sessions on it are refused
    revoked     the customer revoked it here; the wrapped blob is destroyed
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from enum import StrEnum


class KeyStatus(StrEnum):
    VALID = "valid"
    UNVERIFIED = "unverified"
    INVALID = "invalid"
    REVOKED = "revoked"


class Verdict(StrEnum):
    ACCEPTED = "accepted"  # Anthropic answered the authenticated call
    REJECTED = "rejected"  # Anthropic refused the key itself
    UNREACHABLE = "unreachable"  # no answer about the key: network, 5xx, 429, 529


@dataclasses.dataclass(frozen=True, slots=True)
class CheckResult:
    verdict: Verdict
    reason: str  # Anthropic's error type, or what kept us from asking


@dataclasses.dataclass(frozen=True, slots=True)
class Schedule:
    """How often keys are checked."""

    recheck_valid: dt.timedelta = dt.timedelta(hours=24)
    first_retry: dt.timedelta = dt.timedelta(seconds=30)
    max_retry: dt.timedelta = dt.timedelta(hours=1)
    # A checker that claimed a key and died leaves it claimed this long.
    lease: dt.timedelta = dt.timedelta(minutes=5)

    def retry_after(self, attempts: int) -> dt.timedelta:
        """Backoff after `attempts` unanswered checks in a row (1, 2, …)."""
        step = self.first_retry * (2 ** min(max(attempts - 1, 0), 20))
        return min(step, self.max_retry)


DEFAULT_SCHEDULE = Schedule()


@dataclasses.dataclass(frozen=True, slots=True)
class Health:
    status: KeyStatus
    reason: str | None
    attempts: int
    next_check_at: dt.datetime | None  # None: no further automatic checks


def after_check(
    status: KeyStatus,
    attempts: int,
    result: CheckResult,
    now: dt.datetime,
    schedule: Schedule = DEFAULT_SCHEDULE,
    *,
    reason: str | None = None,
) -> Health:
    """The key's health once `result` is known; `reason` is the key's current one.

    An unanswered check changes no status: an unverified key stays unverified and a
    valid or invalid key keeps its status (a blip at Anthropic is no verdict on the key).
    """
    if status is KeyStatus.REVOKED:
        return Health(status, None, 0, None)
    if result.verdict is Verdict.ACCEPTED:
        return Health(KeyStatus.VALID, None, 0, now + schedule.recheck_valid)
    if result.verdict is Verdict.REJECTED:
        return Health(KeyStatus.INVALID, result.reason, 0, None)
    attempts += 1
    if status is KeyStatus.UNVERIFIED:
        reason = result.reason
    return Health(status, reason, attempts, now + schedule.retry_after(attempts))


# Anthropic error types that say the key itself is refused, as reported from live traffic.
KEY_REFUSALS = frozenset({"authentication_error", "permission_error"})


def reported_refusal(http_status: int | None, error_type: str | None) -> bool:
    """Whether a proxied call's outcome is Anthropic refusing the session's key."""
    return http_status in (401, 403) and error_type in KEY_REFUSALS


def refusal_is_conclusive(error_type: str) -> bool:
    """A 401 says the key does not authenticate: conclusive on its own. A 403 can be
    about one model or beta the key may not use, so the key is re-checked first."""
    return error_type == "authentication_error"
