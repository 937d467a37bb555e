"""Usage records to the control plane, through a bounded in-memory buffer.

`publish` never blocks the request path. A record waits as its JSON bytes: one object
instead of some forty, a fifth smaller, and a batch is posted by joining them (a burst the
control plane is slow to take, or its absence, piles records up here). A background task
posts batches over the control link; while the control plane is unreachable the records
wait and are retried with backoff, so none is lost while the proxy lives, and a
control-plane restart loses nothing (records are idempotent by id, so a batch whose answer
was lost is simply sent again).
Shutdown flushes what is left. If the control plane refuses this proxy's credential (a
later attach fenced it out), `on_refused` is told once and nothing more is sent.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable, Sequence

import structlog

from core.backoff import Backoff
from core.usage import UsageRecord
from proxy.control_link import CredentialRefused, Delivery, LinkDown, RecordsRefused

log = structlog.get_logger(__name__)
BATCH = 250  # the control plane takes up to 500 per request
MAX_DELAY_S = 5.0

# Posts records, each as UsageRecord.to_json() made it.
Send = Callable[[Sequence[bytes]], Awaitable[Delivery]]


class UsagePublisher:
    def __init__(
        self,
        send: Send,
        *,
        capacity: int = 100_000,
        linger: float = 0.25,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self._send = send
        self._queue: collections.deque[bytes] = collections.deque()
        self._capacity = capacity
        # Records wait up to `linger` seconds to travel together: one request to the
        # control plane per batch instead of per call (each request costs the control plane
        # an authentication and a round of validation). flush() cuts the wait short.
        self._linger = linger
        self._on_refused = on_refused
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self.dropped = 0
        self.refused = 0
        self.fenced = False

    def publish(self, record: UsageRecord) -> None:
        if len(self._queue) >= self._capacity:
            self._queue.popleft()
            self.dropped += 1
            log.error("usage_buffer_full_record_dropped", dropped=self.dropped)
        self._queue.append(record.to_json())
        self._drained.clear()
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def run(self) -> None:
        backoff = Backoff(0.1, MAX_DELAY_S)
        while not self.fenced:
            await self._wake.wait()
            if len(self._queue) < BATCH and self._linger and not self._urgent.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), self._linger)
            self._wake.clear()
            while self._queue and not self.fenced:
                batch = [self._queue[i] for i in range(min(BATCH, len(self._queue)))]
                if await self._deliver(batch, backoff):
                    for _ in batch:
                        self._queue.popleft()
            if not self._queue:
                self._urgent.clear()
                self._drained.set()

    async def _deliver(self, batch: list[bytes], backoff: Backoff) -> bool:
        """Send one batch: True once it is done with (stored, or refused for good), False
        to send it again (after the backoff) or when the proxy is fenced."""
        try:
            delivery = await self._send(batch)
        except LinkDown as exc:
            log.warning(
                "usage_publish_retrying",
                error=str(exc),
                pending=len(self._queue),
                delay_s=backoff.delay,
            )
            await backoff.sleep()
            return False
        except RecordsRefused:
            log.error("usage_records_not_accepted", count=len(batch))
            self.refused += len(batch)
            backoff.reset()
            return True
        except CredentialRefused:
            self.fenced = True
            log.error("proxy_credential_refused", unsent=len(self._queue))
            self._drained.set()  # nothing more will leave: let flush() answer now
            if self._on_refused is not None:
                self._on_refused("credential_refused")
            return False
        except Exception:
            # Whatever went wrong, the records stay queued: this loop must not die.
            log.exception("usage_publish_failed", pending=len(self._queue))
            await backoff.sleep()
            return False
        backoff.reset()
        if delivery.refused:
            # Never accepted, however often sent: a bug to look into, not to retry.
            self.refused += len(delivery.refused)
            log.error(
                "usage_records_refused",
                count=len(delivery.refused),
                reasons=sorted({str(r.get("reason")) for r in delivery.refused}),
            )
        return True

    async def flush(self, within: float) -> bool:
        """Wait up to `within` seconds for every record to be sent; False if some remain."""
        if self._queue and not self.fenced:
            self._urgent.set()
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), within)
        return not self._queue
