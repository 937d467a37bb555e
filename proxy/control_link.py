"""The proxy's one link to the control plane: usage records out, signals in.

Both travel over HTTP with the proxy's own credential (`mxp_`, from the attach grant); the
proxy holds no Redis, database or cloud credential. `last_contact` is when the control
plane last answered anything: the grace watchdog clears the key when it gets too old.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from proxy.http.response import ResponseCut
from proxy.meter.sse import SseParser
from proxy.transport import HttpClient, UpstreamError

# A batch is small and the control plane answers at once; a request caught in a restart
# must give up soon, so the publisher retries on a fresh connection.
POST_TIMEOUT_S = 10.0
# The control plane sends a heartbeat every few seconds; silence this long is a dead link.
STREAM_IDLE_TIMEOUT_S = 30.0


_FAILURES = (UpstreamError, ResponseCut, TimeoutError, ValueError, OSError)


class LinkDown(Exception):
    """The control plane could not be reached or did not answer properly; retry later."""


class CredentialRefused(Exception):
    """The control plane no longer accepts this proxy's credential: the session was
    attached again (this proxy is fenced out) or is gone. Never retried."""


class RecordsRefused(Exception):
    """The control plane will never take these records (the session ended long ago)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    accepted: int
    refused: list[dict[str, Any]]


class ControlLink:
    def __init__(
        self,
        control_url: str,
        session_id: str,
        credential: str,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._control_url = control_url.rstrip("/")
        base = f"/internal/v1/sessions/{session_id}"
        self._usage_path = f"{base}/usage"
        self._signals_path = f"{base}/signals"
        self._headers = {"Authorization": f"Bearer {credential}"}
        self._client: HttpClient | None = None
        self._clock = clock
        self.last_contact = clock()

    def __repr__(self) -> str:
        return f"<ControlLink {self._control_url}{self._usage_path.rsplit('/', 1)[0]}>"

    async def open(self) -> None:
        self._client = HttpClient(self._control_url)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _touch(self) -> None:
        self.last_contact = self._clock()

    def _http(self) -> HttpClient:
        if self._client is None:
            raise LinkDown("the link is closed")
        return self._client

    @staticmethod
    def _check(status: int) -> None:
        if status == 401:
            raise CredentialRefused("the control plane refused this proxy's credential")
        if status == 403:
            raise RecordsRefused("the control plane no longer takes records for this session")
        if status != 200:
            raise LinkDown(f"control plane answered {status}")

    async def post_records(self, records: Sequence[bytes]) -> Delivery:
        """Post records, each as UsageRecord.to_json() encoded it."""
        body = b'{"records":[' + b",".join(records) + b"]}"
        try:
            async with asyncio.timeout(POST_TIMEOUT_S):
                response = await self._http().request(
                    "POST",
                    self._usage_path,
                    headers={**self._headers, "Content-Type": "application/json"},
                    body=body,
                    read_timeout=POST_TIMEOUT_S,
                )
                async with response:
                    self._check(response.status)
                    answer = await response.json()
        except _FAILURES as exc:
            raise LinkDown(type(exc).__name__) from None
        self._touch()
        return Delivery(int(answer.get("accepted", 0)), list(answer.get("refused") or []))

    async def signal_events(self) -> AsyncIterator[dict[str, Any]]:
        """The session's state as the control plane sends it, until the stream ends.
        Raises LinkDown when it cannot be opened or breaks, CredentialRefused on 401."""
        parser = SseParser()
        try:
            response = await self._http().request(
                "GET",
                self._signals_path,
                headers={**self._headers, "Accept": "text/event-stream"},
                read_timeout=STREAM_IDLE_TIMEOUT_S,
            )
            async with response:
                self._check(response.status)
                self._touch()
                async for chunk in response.chunks():
                    self._touch()  # heartbeats count: the control plane is there
                    for event in parser.feed(chunk):
                        if event.name == "state":
                            yield json.loads(event.data)
        except _FAILURES as exc:
            raise LinkDown(type(exc).__name__) from None
