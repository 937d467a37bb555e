"""The sandbox launcher's heartbeat: if it stops for longer than the grace period, the
candidate is gone (launcher killed, sandbox lost) and the key is cleared."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class KeepaliveWatchdog:
    def __init__(
        self,
        grace_s: float,
        on_lost: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._grace = grace_s
        self._on_lost = on_lost
        self._clock = clock
        self._last: float | None = None  # armed by the first beat

    def beat(self) -> None:
        self._last = self._clock()

    def expired(self) -> bool:
        return self._last is not None and self._clock() - self._last > self._grace

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self._grace / 4))
            if self.expired():
                self._on_lost("keepalive_lost")
                return
