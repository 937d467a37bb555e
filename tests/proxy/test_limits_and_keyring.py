"""Limits with an injected clock, and the key's state machine."""

from __future__ import annotations

import pickle

import pytest

from core.usage import UsageRecord
from proxy.errors import ProxyError
from proxy.keyring import KeyCleared, KeyState, SessionKey
from proxy.limits import BadTokenLockout, SessionBudget, TokenBucket
from tests.factories import Clock


def call(
    *,
    complete: bool = True,
    http_status: int = 200,
    output_tokens: int | None = 10,
    error_type: str | None = None,
) -> UsageRecord:
    return UsageRecord(
        record_id="r", session_id="s", tenant_id="t", actor="candidate", method="POST",
        endpoint="/v1/messages", started_at="2026-11-29T10:00:00+00:00", stream=True,
        http_status=http_status, complete=complete, output_tokens=output_tokens,
        error_type=error_type,
    )  # fmt: skip


def test_token_bucket_refills_at_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate_per_s=2, burst=3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [None, None, None]
    assert bucket.take() == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.take() is None


def test_budget_reserves_and_settles() -> None:
    budget = SessionBudget(max_requests=None, max_output_tokens=100, allowed_models=None)
    first = budget.admit(60)
    with pytest.raises(ProxyError) as caught:
        budget.admit(41)
    assert caught.value.status == 403
    budget.settle(first, call(output_tokens=10))
    assert (budget.output_used, budget.output_reserved) == (10, 0)
    budget.admit(90)


def test_unknown_output_charges_the_whole_reservation() -> None:
    budget = SessionBudget(max_requests=None, max_output_tokens=100, allowed_models=None)
    budget.settle(budget.admit(70), None)
    assert budget.output_used == 70


@pytest.mark.parametrize("error_type", ["client_aborted", "upstream_cut", "upstream_timeout"])
def test_a_call_that_did_not_complete_keeps_its_whole_reservation(error_type: str) -> None:
    """message_start says output_tokens 1; what was generated before the cut is unknown."""
    budget = SessionBudget(max_requests=None, max_output_tokens=5000, allowed_models=None)
    budget.settle(budget.admit(4000), call(complete=False, output_tokens=1, error_type=error_type))
    assert budget.output_used == 4000
    with pytest.raises(ProxyError):
        budget.admit(4000)  # a second aborted 4000-token stream cannot pass a 5000 budget


def test_an_error_answer_with_no_usage_charges_nothing() -> None:
    budget = SessionBudget(max_requests=None, max_output_tokens=100, allowed_models=None)
    budget.settle(budget.admit(70), call(http_status=429, output_tokens=None))
    assert budget.output_used == 0


def test_the_budget_starts_from_what_the_session_already_spent() -> None:
    budget = SessionBudget(
        max_requests=3,
        max_output_tokens=100,
        allowed_models=None,
        spent_requests=2,
        spent_output_tokens=90,
    )
    with pytest.raises(ProxyError):
        budget.admit(11)
    budget.admit(10)
    with pytest.raises(ProxyError, match="request limit"):
        budget.admit(0)


def test_lockout_doubles_and_expires() -> None:
    clock = Clock()
    lockout = BadTokenLockout(threshold=3, window=60, lockout=10, max_lockout=15, clock=clock)
    for _ in range(3):
        lockout.record_failure("ip")
    assert lockout.retry_after("ip") == pytest.approx(10)
    assert lockout.retry_after("other") is None
    clock.now += 10
    assert lockout.retry_after("ip") is None
    for _ in range(3):
        lockout.record_failure("ip")
    assert lockout.retry_after("ip") == pytest.approx(15)  # doubled, capped


def test_key_arms_once_clears_to_zeros_and_never_shows() -> None:
    key = SessionKey()
    with pytest.raises(KeyCleared):
        key.copy_into(memoryview(bytearray()))
    buffer = bytearray(b"sk-ant-api03-" + b"x" * 95)
    key.arm(buffer)
    head = bytearray(key.size)
    key.copy_into(memoryview(head))
    assert head == buffer
    assert "sk-ant" not in repr(key)
    assert "sk-ant" not in str(key)
    with pytest.raises(TypeError):
        pickle.dumps(key)
    key.clear()
    assert key.state is KeyState.CLEARED
    assert buffer == bytearray(len(buffer))  # the caller's buffer is the one zeroed
    with pytest.raises(KeyCleared):
        key.copy_into(memoryview(head))
    with pytest.raises(KeyCleared):
        key.arm(bytearray(b"again"))
