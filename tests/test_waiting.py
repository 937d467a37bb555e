"""The polling helper the process tests share."""

from __future__ import annotations

import pytest

from tests.waiting import wait_until


async def test_returns_once_the_condition_holds_sync_or_async() -> None:
    polls = []

    def third_time() -> bool:
        polls.append(1)
        return len(polls) >= 3

    async def at_once() -> bool:
        return True

    await wait_until(third_time, within=30, what="three polls", every=0)
    await wait_until(at_once, within=30, what="nothing")
    assert len(polls) == 3


async def test_fails_naming_what_it_waited_for() -> None:
    with pytest.raises(AssertionError, match="waiting for the impossible"):
        await wait_until(lambda: False, within=0, what="the impossible")
