"""The proxy for one attached session: its listener, and every resource it runs.

`Proxy.start` binds the sandbox-facing listener and starts the background work (record
publisher, signal stream, watchdogs); `Proxy.stop` stops the listener, flushes the records
while the control link is still up, then stops the rest, in reverse order of start.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import structlog

from core.settings import Settings
from core.tasks import spawn
from proxy import transport
from proxy.attach import Grant
from proxy.calls import Calls
from proxy.control_link import ControlLink
from proxy.keepalive import KeepaliveWatchdog
from proxy.keyring import SessionKey
from proxy.metrics import ProxyMetrics
from proxy.publisher import UsagePublisher
from proxy.session import ProxySession
from proxy.signals import ControlGrace, SignalWatcher

log = structlog.get_logger(__name__)
FLUSH_TIMEOUT_S = 15.0  # longer than one batch's request timeout
STOP_CALLS_S = 5.0  # calls still running at stop get this long to finish


class Proxy:
    def __init__(
        self,
        settings: Settings,
        grant: Grant,
        key: SessionKey,
        *,
        control_url: str,
        upstream_url: str | None = None,
        keepalive_grace: float = 0.0,
        upstream: transport.Upstream | None = None,
    ) -> None:
        info = grant.info
        self.settings = settings
        self.session = ProxySession(
            info, key, rate_per_s=settings.proxy_rate_per_s, burst=settings.proxy_burst
        )
        self.link = ControlLink(control_url, info.session_id, grant.credential)
        self.publisher = UsagePublisher(self.link.post_records, on_refused=self.session.clear)
        self.signals = SignalWatcher(self.link, self.session)
        self.metrics = ProxyMetrics(
            unsent=lambda: self.publisher.pending,
            key_armed=lambda: self.session.key.armed,
            in_flight=lambda: self.session.in_flight,
        )
        self.watchdog = (
            KeepaliveWatchdog(keepalive_grace, self.session.clear) if keepalive_grace > 0 else None
        )
        self.upstream = upstream or transport.Upstream(upstream_url or settings.upstream_url)
        self.calls = Calls(self.session, self.upstream, self.publisher, self.metrics, self.watchdog)
        self._listener: transport.Listener | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._deadline: asyncio.TimerHandle | None = None
        self.address: tuple[str, int] = ("", 0)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        session = self.session
        loop = asyncio.get_running_loop()
        await self.link.open()
        self._tasks.append(spawn(self.publisher.run(), name="usage-publisher"))
        self._tasks.append(spawn(self.signals.run(), name="signal-stream"))
        # The deadline, the control plane's grace period and the launcher's keepalive:
        # each clears the key when it runs out.
        seconds_left = (session.info.deadline_at - dt.datetime.now(dt.UTC)).total_seconds()
        self._deadline = loop.call_later(max(seconds_left, 0), session.clear, "deadline")
        grace = ControlGrace(
            self.link, self.settings.proxy_control_grace_s, session.clear, loop.time
        )
        self._tasks.append(spawn(grace.watch(), name="control-grace"))
        if self.watchdog is not None:
            self._tasks.append(spawn(self.watchdog.watch(), name="keepalive-watchdog"))
        self._listener = await transport.serve(
            self.calls, host, port, max_body=self.settings.proxy_max_body_bytes
        )
        self.address = self._listener.address

    async def stop(self) -> None:
        """Stop listening, give running calls a moment, flush records, stop the rest."""
        listener, self._listener = self._listener, None
        if listener is not None and listener.server is not None:
            listener.server.close()
        if self.session.in_flight:
            try:
                await asyncio.wait_for(self.session.idle.wait(), STOP_CALLS_S)
            except TimeoutError:
                log.warning("proxy_stopped_with_calls_in_flight", calls=self.session.in_flight)
        if listener is not None:
            listener.close()
        if not await self.publisher.flush(FLUSH_TIMEOUT_S):
            log.error("usage_records_unsent", unsent=self.publisher.pending)
        if self._deadline is not None:
            self._deadline.cancel()
        for task in reversed(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.link.close()
        self.upstream.close()


async def serve_metrics(metrics: ProxyMetrics, host: str, port: int) -> transport.Listener:
    """A second listener with only GET /metrics, for Prometheus on the pod's address; the
    sandbox-facing port stays on loopback."""
    from proxy.errors import not_found

    async def scrape(call: transport.Downstream) -> None:
        request = call.request
        if request.method != b"GET" or request.path != b"/metrics":
            error = not_found(request.method.decode("latin-1"), request.path.decode("latin-1"))
            call.write(error.render(keep_alive=call.will_keep_alive()))
            return
        body = metrics.render()
        call.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\n"
            b"content-length: %d\r\n%s\r\n%s"
            % (len(body), b"" if call.will_keep_alive() else b"connection: close\r\n", body)
        )

    return await transport.serve(scrape, host, port, max_body=0)
