"""Key health decisions: a check's verdict, the backoff, and which live refusals count."""

from __future__ import annotations

import datetime as dt

import pytest

from control.keys.health import (
    CheckResult,
    KeyStatus,
    Schedule,
    Verdict,
    after_check,
    refusal_is_conclusive,
    reported_refusal,
)

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
ACCEPTED = CheckResult(Verdict.ACCEPTED, "ok")
REFUSED = CheckResult(Verdict.REJECTED, "authentication_error")
DOWN = CheckResult(Verdict.UNREACHABLE, "http_529")


@pytest.mark.parametrize("status", [KeyStatus.UNVERIFIED, KeyStatus.VALID, KeyStatus.INVALID])
def test_an_accepted_key_is_valid_and_rechecked_daily(status: KeyStatus) -> None:
    health = after_check(status, 3, ACCEPTED, NOW)
    assert (health.status, health.reason, health.attempts) == (KeyStatus.VALID, None, 0)
    assert health.next_check_at == NOW + dt.timedelta(hours=24)


@pytest.mark.parametrize("status", [KeyStatus.UNVERIFIED, KeyStatus.VALID])
def test_a_refused_key_is_invalid_and_not_checked_again(status: KeyStatus) -> None:
    health = after_check(status, 0, REFUSED, NOW)
    assert (health.status, health.reason, health.next_check_at) == (
        KeyStatus.INVALID,
        "authentication_error",
        None,
    )


def test_an_unanswered_check_keeps_the_status_and_backs_off() -> None:
    schedule = Schedule(first_retry=dt.timedelta(seconds=30), max_retry=dt.timedelta(hours=1))
    waits, attempts = [], 0
    for _ in range(9):
        health = after_check(KeyStatus.UNVERIFIED, attempts, DOWN, NOW, schedule)
        assert (health.status, health.reason) == (KeyStatus.UNVERIFIED, "http_529")
        attempts = health.attempts
        assert health.next_check_at is not None
        waits.append(int((health.next_check_at - NOW).total_seconds()))
    assert waits == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]


def test_a_blip_is_no_verdict_on_a_valid_or_invalid_key() -> None:
    valid = after_check(KeyStatus.VALID, 0, DOWN, NOW)
    assert (valid.status, valid.reason, valid.attempts) == (KeyStatus.VALID, None, 1)
    invalid = after_check(KeyStatus.INVALID, 0, DOWN, NOW, reason="authentication_error")
    assert (invalid.status, invalid.reason) == (KeyStatus.INVALID, "authentication_error")


def test_a_revoked_key_is_never_scheduled() -> None:
    health = after_check(KeyStatus.REVOKED, 0, ACCEPTED, NOW)
    assert (health.status, health.next_check_at) == (KeyStatus.REVOKED, None)


@pytest.mark.parametrize(
    ("status", "error_type", "counts"),
    [
        (401, "authentication_error", True),
        (403, "permission_error", True),
        (400, "invalid_request_error", False),
        (429, "rate_limit_error", False),
        (529, "overloaded_error", False),
        (401, None, False),
        (502, "upstream_unavailable", False),
    ],
)
def test_which_live_answers_are_refusals_of_the_key(
    status: int, error_type: str | None, counts: bool
) -> None:
    assert reported_refusal(status, error_type) is counts


def test_only_an_authentication_error_is_conclusive_alone() -> None:
    assert refusal_is_conclusive("authentication_error")
    assert not refusal_is_conclusive("permission_error")
