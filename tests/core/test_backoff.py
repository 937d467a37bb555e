"""The retry delay: doubles after each failure up to its ceiling, starts over on success."""

from __future__ import annotations

from core.backoff import Backoff


async def test_delays_double_to_the_ceiling_and_start_over_after_a_success() -> None:
    backoff = Backoff(0.001, 0.004)
    waited = []
    for _ in range(5):
        waited.append(backoff.delay)  # what the loops log before they wait
        await backoff.sleep()
    backoff.reset()
    waited.append(backoff.delay)
    assert waited == [0.001, 0.002, 0.004, 0.004, 0.004, 0.001]
