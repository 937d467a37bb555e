"""One sandbox connection, sans-io: what arrived, and what to do about it.

The I/O side feeds bytes in with `receive` and acts on what comes back:

- `Dispatch(exchange)`: start handling this request (its head is in; its body may not be);
- `BodyDone(exchange)`: the request's body is complete;
- `Send(data)`: write these bytes to the client;
- `Close()`: close the connection once what was sent is flushed.

Requests are handled one at a time, in the order they arrived, so pipelined requests are
answered in order; the next is dispatched when the previous one is answered and its body is
in. A handler may answer before reading the body (a refused token): the rest of that body
is discarded, unless the client is waiting for a 100 Continue, in which case the connection
closes. A request the parser refuses is answered, and the connection closes.
"""

from __future__ import annotations

import collections
import dataclasses
import json

from proxy.http.messages import CONTINUE, response_head
from proxy.http.request import END, Refusal, Request, RequestReader

# Beyond this many requests queued behind the current one, or this many body bytes
# buffered for them, the I/O side stops reading until the queue drains.
MAX_QUEUED = 8
MAX_QUEUED_BYTES = 1 << 20


@dataclasses.dataclass(slots=True, eq=False)
class Exchange:
    """A request, its body as it arrives, and where its answer stands."""

    request: Request
    chunks: list[bytes] = dataclasses.field(default_factory=list)
    size: int = 0
    complete: bool = False  # the whole body is in
    answered: bool = False  # the handler is done with it
    continued: bool = False  # a 100 Continue was sent
    refusal: Refusal | None = None  # the body broke a limit or the framing

    def body(self) -> bytes:
        return self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)


@dataclasses.dataclass(slots=True, frozen=True)
class Dispatch:
    exchange: Exchange


@dataclasses.dataclass(slots=True, frozen=True)
class BodyDone:
    exchange: Exchange


@dataclasses.dataclass(slots=True, frozen=True)
class Send:
    data: bytes


@dataclasses.dataclass(slots=True, frozen=True)
class Close:
    pass


Action = Dispatch | BodyDone | Send | Close


def error_response(
    status: int,
    type_: str,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    keep_alive: bool = True,
) -> bytes:
    """An error in Anthropic's shape, from the proxy itself (never a token or key in it).

    Our own 4xx are final: the SDKs and Claude Code are told not to retry them (a bare 401
    makes Claude Code retry for minutes). A 429 says when to come back; a 5xx may be retried.
    """
    body = json.dumps({"type": "error", "error": {"type": type_, "message": message}}).encode()
    out = [(b"content-type", b"application/json"), (b"x-metrux-proxy-error", b"1")]
    if 400 <= status < 500 and status != 429:
        out.append((b"x-should-retry", b"false"))
    for name, value in (headers or {}).items():
        out = [pair for pair in out if pair[0] != name.encode()]
        out.append((name.encode(), value.encode()))
    head = response_head(
        status, _REASONS.get(status, b"Error"), out, content_length=len(body), keep_alive=keep_alive
    )
    return head + body


_REASONS = {
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    413: b"Request Entity Too Large",
    414: b"URI Too Long",
    417: b"Expectation Failed",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    504: b"Gateway Timeout",
}


class ServerConnection:
    __slots__ = ("_pending_refusal", "_queue", "_queued_bytes", "_reader", "closing")

    def __init__(self, max_body: int) -> None:
        self._reader = RequestReader(max_body)
        self._queue: collections.deque[Exchange] = collections.deque()
        self._queued_bytes = 0
        self._pending_refusal: bytes | None = None  # sent once the queue ahead is answered
        self.closing = False  # nothing more is read: the connection closes after the queue

    @property
    def backlogged(self) -> bool:
        """Too much is waiting behind the current request: stop reading for now."""
        return len(self._queue) > MAX_QUEUED or self._queued_bytes > MAX_QUEUED_BYTES

    @property
    def idle(self) -> bool:
        return not self._queue

    # One loop over the parser's events, not split into a method per event: it runs for
    # every read of every connection, the proxy's hot path, where each extra call per event
    # is CPU per proxied call (bench/proxy_overhead.py measures it).
    def receive(self, data: bytes) -> list[Action]:  # noqa: C901
        if self.closing:
            return []
        reader = self._reader
        events = reader.feed(data)
        actions: list[Action] = []
        queue = self._queue
        dispatched = None  # dispatched by this call: its handler is not waiting yet
        for event in events:
            if isinstance(event, Request):
                queue.append(Exchange(event))
                if len(queue) == 1:
                    dispatched = queue[0]
                    actions.append(Dispatch(dispatched))
                continue
            exchange = queue[-1]
            if event is END:
                exchange.complete = True
                if exchange.answered:
                    actions.extend(self._next())
                elif exchange is queue[0] and exchange is not dispatched:
                    actions.append(BodyDone(exchange))
            elif not exchange.answered:  # else: answered early, the rest is discarded
                exchange.chunks.append(event)  # type: ignore[arg-type]
                exchange.size += len(event)  # type: ignore[arg-type]
                if exchange is not queue[0]:
                    self._queued_bytes += len(event)  # type: ignore[arg-type]
        if reader.upgraded:
            # Nothing after an Upgrade or CONNECT request is read: answer it, then close.
            self.closing = True
            if queue:
                queue[-1].request.keep_alive = False
        if reader.refusal is not None:
            actions.extend(self._refuse(reader.refusal))
        return actions

    def want_body(self, exchange: Exchange) -> list[Action]:
        """The handler waits for the body: a client that asked for it gets its 100."""
        if exchange.complete or exchange.continued or not exchange.request.expects_continue:
            return []
        exchange.continued = True
        return [Send(CONTINUE)]

    def keep_alive(self, exchange: Exchange) -> bool:
        """Whether the connection stays open after this exchange's answer (the answer
        says so in its head)."""
        request = exchange.request
        if not request.keep_alive or exchange.refusal is not None:
            return False
        # Answered before its body, to a client still waiting for a 100: it may never
        # send the body, so the connection cannot be framed any more.
        return exchange.complete or not request.expects_continue or exchange.continued

    def answered(self, exchange: Exchange) -> list[Action]:
        """The handler has written its whole answer (or given up on the connection)."""
        exchange.answered = True
        exchange.chunks = []
        if not self.keep_alive(exchange):
            self.closing = True
            self._queue.clear()
            return [Close()]
        if exchange.complete:
            return self._next()
        return []  # the rest of its body is discarded as it arrives

    def _next(self) -> list[Action]:
        queue = self._queue
        queue.popleft()
        if queue:
            self._queued_bytes -= queue[0].size
            return [Dispatch(queue[0])]
        if self._pending_refusal is not None:
            return [Send(self._pending_refusal), Close()]
        if self.closing:
            return [Close()]
        return []

    def _refuse(self, refusal: Refusal) -> list[Action]:
        self.closing = True
        queue = self._queue
        if queue and not queue[-1].complete:
            # The refusal is about the body being read: its handler answers it.
            exchange = queue[-1]
            exchange.refusal = refusal
            exchange.complete = True
            exchange.chunks = []
            return [BodyDone(exchange)] if exchange is queue[0] else []
        response = error_response(refusal.status, refusal.type, refusal.message, keep_alive=False)
        if queue:  # answered in turn, after the requests before it
            self._pending_refusal = response
            return []
        return [Send(response), Close()]
