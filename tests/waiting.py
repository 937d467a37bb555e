"""Waiting for state another process owns, which offers no event to await.

`wait_until` polls a condition (a plain or async callable) until it holds, and fails with
what it was waiting for once `within` seconds have passed. The bound is a deadline for a
broken run, not a timing assertion: give it room for a loaded machine.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]],
    *,
    within: float,
    what: str,
    every: float = 0.05,
) -> None:
    deadline = time.monotonic() + within
    while True:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up after {within:g} s waiting for {what}")
        await asyncio.sleep(every)
