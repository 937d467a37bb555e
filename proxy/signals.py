"""Obeying the control plane: one long-lived signal stream, and a grace period.

The control plane sends the session's state when the stream opens, after every change and
periodically, so a proxy that was disconnected obeys what it missed as soon as it is back.
The stream is re-opened with backoff whenever it breaks. If the control plane cannot be
reached for longer than the grace period, the key is cleared: a proxy that can neither
report nor be told to stop must not go on serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from core.backoff import Backoff
from proxy.control_link import ControlLink, CredentialRefused, LinkDown, RecordsRefused
from proxy.session import ProxySession

log = structlog.get_logger(__name__)


def stop_reason(event: dict[str, Any]) -> str | None:
    """Why this state means the proxy must clear its key, or None. Pure."""
    if not event.get("final"):
        return None
    if event.get("current") is False:
        return "superseded"
    signal = event.get("signal")
    return f"signal_{signal}" if signal else f"session_{event.get('state')}"


class SignalWatcher:
    def __init__(self, link: ControlLink, session: ProxySession, *, max_delay: float = 5.0) -> None:
        self._link = link
        self._session = session
        self._max_delay = max_delay
        self.connected = asyncio.Event()  # set while a stream is open (tests, readiness)

    def apply(self, event: dict[str, Any]) -> bool:
        """Obey one state event; True when the proxy must stop listening."""
        session = self._session
        grader = event.get("grader_token_sha256")
        if isinstance(grader, str):
            session.set_grader(grader)
        if event.get("candidate_enabled") is False:
            session.retire_candidate()
        reason = stop_reason(event)
        if reason is not None:
            session.clear(reason)
            return True
        return False

    async def run(self) -> None:
        backoff = Backoff(0.2, self._max_delay)
        while not self._session.stopped.is_set():
            try:
                async for event in self._link.signal_events():
                    self.connected.set()
                    backoff.reset()
                    if self.apply(event):
                        return
            except CredentialRefused:
                self._session.clear("credential_refused")
                return
            except (LinkDown, RecordsRefused) as exc:
                log.warning("signal_stream_lost", error=str(exc), delay_s=backoff.delay)
            except Exception:
                # The stream is re-opened whatever broke it: this loop must not die.
                log.exception("signal_stream_failed", delay_s=backoff.delay)
            finally:
                self.connected.clear()
            await backoff.sleep()


class ControlGrace:
    """Clears the key when the control plane has not answered for `grace_s` seconds."""

    def __init__(
        self,
        link: ControlLink,
        grace_s: float,
        on_lost: Callable[[str], None],
        clock: Callable[[], float],
    ) -> None:
        self._link = link
        self._grace = grace_s
        self._on_lost = on_lost
        self._clock = clock

    def expired(self) -> bool:
        return self._clock() - self._link.last_contact > self._grace

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self._grace / 4))
            if self.expired():
                log.error("control_plane_unreachable", grace_s=self._grace)
                self._on_lost("control_plane_unreachable")
                return
