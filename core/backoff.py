"""Waiting between attempts: a delay that doubles after each failure, up to a ceiling, and
starts over after a success. Shared by every loop that retries a peer (the proxy's record
publisher, signal stream and attach; the control plane's usage ingester)."""

from __future__ import annotations

import asyncio


class Backoff:
    __slots__ = ("_ceiling", "_first", "delay")

    def __init__(self, first: float, ceiling: float) -> None:
        self._first = first
        self._ceiling = ceiling
        self.delay = first  # what the next sleep() waits: log it before waiting

    def reset(self) -> None:
        """A success: the next failure waits the first delay again."""
        self.delay = self._first

    async def sleep(self) -> None:
        """Wait the current delay, then double it (up to the ceiling)."""
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, self._ceiling)
