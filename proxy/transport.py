"""The proxy's I/O: the asyncio transports on both sides, and nothing else.

- `SandboxProtocol` serves one sandbox connection: it feeds bytes to the sans-io
  `ServerConnection` (proxy/http/connection.py), runs the handler for each request it
  dispatches, and gives the handler a `Downstream` to read the body and write the answer.
- `Upstream` keeps a pool of keep-alive HTTP/1.1 connections to one origin (TLS with
  certificate verification and SNI for https), and `UpstreamConnection` sends one request
  and yields its response head and body chunks, with a timeout per read.
- `HttpClient` is the small client the proxy's own calls use (attach, records, signals,
  the key check), on the same connections.

No redirect is followed and nothing is retried here: the callers decide.
"""

from __future__ import annotations

import asyncio
import collections
import json
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import structlog

from proxy.headers import Secret, with_secret
from proxy.http.connection import (
    BodyDone,
    Close,
    Dispatch,
    Exchange,
    Send,
    ServerConnection,
)
from proxy.http.request import END, Request
from proxy.http.response import ResponseCut, ResponseHead, ResponseReader

log = structlog.get_logger(__name__)

KEEPALIVE_S = 75.0  # an idle sandbox connection is closed after this long
LINGER_S = 2.0  # after a refusal, unread input is drained this long before closing
READ_HIGH_WATER = 1 << 20  # upstream bytes buffered for a slow client before pausing


class ClientGone(Exception):
    """The sandbox closed its connection."""


Handler = Callable[["Downstream"], Awaitable[None]]


class Downstream:
    """One request from the sandbox, as its handler sees it: the head, the body when it is
    in, and the connection to answer on."""

    __slots__ = ("_protocol", "_waiter", "exchange", "keep_alive", "request", "started")

    def __init__(self, protocol: SandboxProtocol, exchange: Exchange) -> None:
        self._protocol = protocol
        self.exchange = exchange
        self._waiter: asyncio.Future[None] | None = None
        self.request: Request = exchange.request
        self.started = False  # a response head was written
        self.keep_alive = True

    @property
    def peer(self) -> str:
        return self._protocol.peer

    @property
    def closed(self) -> bool:
        return self._protocol.closed

    async def body(self) -> bytes:
        """The whole request body; raises Refusal when it broke a limit, ClientGone when
        the client left before sending it."""
        exchange = self.exchange
        if not exchange.complete:
            protocol = self._protocol
            protocol.act(protocol.conn.want_body(exchange))
            self._waiter = protocol.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if exchange.refusal is not None:
            raise exchange.refusal
        return exchange.body()

    def _body_done(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _lost(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ClientGone())

    def will_keep_alive(self) -> bool:
        """Whether the answer may leave the connection open (say so in its head)."""
        self.keep_alive = self._protocol.conn.keep_alive(self.exchange) and not self.closed
        return self.keep_alive

    def write(self, data: bytes) -> None:
        protocol = self._protocol
        if protocol.closed:
            raise ClientGone()
        self.started = True
        protocol.transport.write(data)

    async def drain(self) -> None:
        """Wait while the client reads slower than the upstream sends."""
        await self._protocol.drain()

    def abort(self) -> None:
        """Drop the connection: the client must see a failure, never a clean end."""
        self._protocol.abort()


class SandboxProtocol(asyncio.Protocol):
    __slots__ = (
        "_drain",
        "_handler",
        "_idle_timer",
        "_last_activity",
        "_linger",
        "_max_body",
        "_registry",
        "_task",
        "closed",
        "conn",
        "current",
        "loop",
        "peer",
        "transport",
    )

    def __init__(
        self, handler: Handler, max_body: int, registry: set[SandboxProtocol] | None = None
    ) -> None:
        self._handler = handler
        self._max_body = max_body
        self._registry = registry
        self.loop = asyncio.get_running_loop()
        self.conn = ServerConnection(max_body)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.peer = "unknown"
        self.closed = False
        self.current: Downstream | None = None
        self._task: asyncio.Task[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._last_activity = self.loop.time()
        self._idle_timer: asyncio.TimerHandle | None = self.loop.call_later(
            KEEPALIVE_S, self._check_idle
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peername = transport.get_extra_info("peername")
        if isinstance(peername, tuple) and peername:
            self.peer = str(peername[0])

    def data_received(self, data: bytes) -> None:
        self._last_activity = self.loop.time()
        self.act(self.conn.receive(data))
        if self.conn.backlogged and not self.closed:
            self.transport.pause_reading()

    def act(self, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, Dispatch):
                self._dispatch(action.exchange)
            elif isinstance(action, BodyDone):
                if self.current is not None and self.current.exchange is action.exchange:
                    self.current._body_done()
            elif isinstance(action, Send):
                if not self.closed:
                    self.transport.write(action.data)
            elif isinstance(action, Close):
                self._close()

    def _dispatch(self, exchange: Exchange) -> None:
        downstream = Downstream(self, exchange)
        self.current = downstream
        self._task = self.loop.create_task(self._run(downstream))

    async def _run(self, downstream: Downstream) -> None:
        try:
            await self._handler(downstream)
        except (asyncio.CancelledError, ClientGone):
            pass
        except Exception:
            log.exception("proxy_connection_handler_failed")
            self.abort()
        finally:
            if self.current is downstream:
                self.current = None
                self._task = None
            if not self.closed:
                if not downstream.keep_alive:  # its answer said "connection: close"
                    downstream.request.keep_alive = False
                self.act(self.conn.answered(downstream.exchange))
                if not self.conn.backlogged and not self.closed:
                    self.transport.resume_reading()

    def _close(self) -> None:
        """Close once what was written is flushed; unread input is drained for a moment
        first, so the client reads the answer instead of a reset."""
        if self.closed or self._linger is not None:
            return
        transport = self.transport
        if transport.can_write_eof():
            transport.write_eof()
            self._linger = self.loop.call_later(LINGER_S, transport.close)
        else:
            transport.close()

    def abort(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.abort()

    def _check_idle(self) -> None:
        self._idle_timer = None
        if self.closed:
            return
        quiet = self.loop.time() - self._last_activity
        if self.current is None and self.conn.idle and quiet >= KEEPALIVE_S:
            self.transport.close()
            return
        self._idle_timer = self.loop.call_later(max(KEEPALIVE_S - quiet, 1.0), self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._registry is not None:
            self._registry.discard(self)
        for timer in (self._idle_timer, self._linger):
            if timer is not None:
                timer.cancel()
        if self.current is not None:
            self.current._lost()
        if self._task is not None:
            self._task.cancel()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)  # drain() then sees the connection closed

    def pause_writing(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    async def drain(self) -> None:
        if self._drain is not None and not self._drain.done():
            await self._drain
        if self.closed:
            raise ClientGone()


class Listener:
    """A listening socket and the connections it accepted."""

    def __init__(self, handler: Handler, max_body: int) -> None:
        self._handler = handler
        self._max_body = max_body
        self.connections: set[SandboxProtocol] = set()
        self.server: asyncio.Server | None = None

    def _accept(self) -> SandboxProtocol:
        protocol = SandboxProtocol(self._handler, self._max_body, self.connections)
        self.connections.add(protocol)
        return protocol

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._accept, host, port, reuse_address=True)

    def close(self) -> None:
        """Stop accepting, and close every connection (a call still running is cut)."""
        if self.server is not None:
            self.server.close()
        for protocol in list(self.connections):
            protocol.abort()


async def serve(handler: Handler, host: str, port: int, *, max_body: int) -> Listener:
    listener = Listener(handler, max_body)
    await listener.start(host, port)
    return listener


# The upstream side


class UpstreamError(Exception):
    """The upstream could not be reached, or broke the connection."""


class Waiting:
    __slots__ = ()


WAIT = Waiting()


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to the upstream, carrying one call at a time."""

    __slots__ = (
        "_buffered",
        "_error",
        "_events",
        "_paused",
        "_reader",
        "_vectored",
        "_waiter",
        "closed",
        "idle_since",
        "loop",
        "transport",
    )

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self._reader = ResponseReader()
        self._events: collections.deque[Any] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: Exception | None = None
        self._buffered = 0
        self._paused = False
        self._vectored = False
        self.closed = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._vectored = type(transport).__module__.startswith("uvloop")

    def data_received(self, data: bytes) -> None:
        try:
            events = self._reader.feed(data)
        except ResponseCut as exc:
            self._fail(exc)
            return
        if not events:
            return
        self._events.extend(events)
        for event in events:
            if event.__class__ is bytes:
                self._buffered += len(event)
        if self._buffered > READ_HIGH_WATER and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost ends the message

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        try:
            self._events.extend(self._reader.eof())
        except ResponseCut as cut:
            if self._error is None:
                self._error = cut
        self._wake()

    def _fail(self, exc: Exception) -> None:
        if self._error is None:
            self._error = exc
        self.transport.abort()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def flushed(self) -> bool:
        """Every byte written has left for the kernel (or the TLS layer)."""
        return self.transport.get_write_buffer_size() == 0

    def send(self, head: bytearray, body: bytes) -> None:
        """Write a request; the head is the caller's to zero once `flushed`. On uvloop, in
        one vectored write. Elsewhere writelines may join the two into a new bytes object,
        a copy of the key nobody could zero, so they go in two writes."""
        if self.closed:
            raise UpstreamError("the upstream closed the connection")
        if body and self._vectored:
            self.transport.writelines((head, body))
            return
        self.transport.write(head)
        if body:
            self.transport.write(body)

    async def _next(self, read_timeout: float) -> Any:
        while not self._events:
            if self._error is not None:
                raise self._error
            if self.closed:
                raise ResponseCut("the upstream closed the connection")
            waiter = self.loop.create_future()
            self._waiter = waiter
            timer = self.loop.call_later(read_timeout, _expire, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        return self._take()

    def _take(self) -> Any:
        """The next event; reading resumes once a slow client has caught up."""
        event = self._events.popleft()
        if event.__class__ is bytes:
            self._buffered -= len(event)
            if self._paused and self._buffered <= READ_HIGH_WATER // 2:
                self._paused = False
                self.transport.resume_reading()
        return event

    async def read_head(self, read_timeout: float) -> ResponseHead:
        event = await self._next(read_timeout)
        if not isinstance(event, ResponseHead):
            raise ResponseCut("the upstream sent no response head")
        return event

    def read_ready(self) -> bytes | Waiting | None:
        """The next body chunk if it has arrived (None at the end of the body), else
        WAIT: the caller writes what it has before it waits."""
        if not self._events:
            return WAIT
        event = self._take()
        return None if event is END else event

    async def read_chunk(self, read_timeout: float) -> bytes | None:
        """The next body chunk as it arrived, or None at the end of the body."""
        event = await self._next(read_timeout)
        if event is END:
            return None
        return event  # type: ignore[no-any-return]

    @property
    def reusable(self) -> bool:
        return not self.closed and self._reader.complete and self._reader.keep_alive

    def reset(self) -> None:
        """Ready for the next call on the same connection."""
        self._reader.next_message()
        self._events.clear()
        self._buffered = 0


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def default_ssl_context() -> ssl.SSLContext:
    context = ssl.create_default_context()  # verifies the certificate and the host name
    context.set_alpn_protocols(["http/1.1"])
    return context


class Upstream:
    """A pool of keep-alive connections to one origin (`http://` or `https://` URL, with
    an optional path prefix that is put before every request's path)."""

    IDLE_S = 15.0  # an idle pooled connection older than this is closed, not reused
    MAX_IDLE = 64

    def __init__(
        self,
        url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.url = url.rstrip("/")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        default_port = self.port == (443 if parts.scheme == "https" else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = (host if default_port else f"{host}:{self.port}").encode("idna")
        self.prefix = parts.path.rstrip("/").encode()
        self.ssl = (ssl_context or default_ssl_context()) if parts.scheme == "https" else None
        self.connect_timeout = connect_timeout
        self._idle: list[UpstreamConnection] = []

    def __repr__(self) -> str:
        return f"<Upstream {self.url}>"

    async def connect(self) -> UpstreamConnection:
        """A pooled connection if one is fresh, else a new one; raises UpstreamError or
        TimeoutError."""
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < self.IDLE_S:
                return conn
            conn.transport.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    UpstreamConnection,
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl is not None else None,
                )
        except OSError as exc:  # refused, unreachable, or a certificate that does not verify
            raise UpstreamError(type(exc).__name__) from None
        return conn

    def release(self, conn: UpstreamConnection, reusable: bool) -> None:
        if reusable and conn.reusable and conn.flushed and len(self._idle) < self.MAX_IDLE:
            conn.reset()
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.transport.abort()

    def close(self) -> None:
        for conn in self._idle:
            conn.transport.close()
        self._idle.clear()


class ClientResponse:
    """A response to one of the proxy's own calls. Release it (or use `async with`)."""

    def __init__(
        self, upstream: Upstream, conn: UpstreamConnection, head: ResponseHead, read_timeout: float
    ) -> None:
        self._upstream = upstream
        self._conn: UpstreamConnection | None = conn
        self._timeout = read_timeout
        self.status = head.status
        self.head = head

    async def __aenter__(self) -> ClientResponse:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    async def chunks(self, read_timeout: float | None = None) -> AsyncIterator[bytes]:
        """The body as it arrives; each read may wait `read_timeout` seconds."""
        conn = self._conn
        if conn is None:
            return
        while (chunk := await conn.read_chunk(read_timeout or self._timeout)) is not None:
            yield chunk
        self.release(reusable=True)

    async def read(self, limit: int = 16 << 20) -> bytes:
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks():
            size += len(chunk)
            if size > limit:
                self.release()
                raise UpstreamError("response body is too large")
            parts.append(chunk)
        return b"".join(parts)

    async def json(self) -> Any:
        return json.loads(await self.read())

    def release(self, reusable: bool = False) -> None:
        if self._conn is not None:
            self._upstream.release(self._conn, reusable)
            self._conn = None


class HttpClient:
    """The proxy's own calls to one origin (the control plane, or Anthropic for a key
    check). Headers and bodies here never carry the customer's key, except through
    `request_head`, which the caller builds and zeroes."""

    def __init__(self, base_url: str, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.upstream = Upstream(base_url, ssl_context=ssl_context)

    def head(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body_length: int,
        *,
        key: Secret | None = None,
    ) -> bytearray:
        """A request head; `key` goes in as x-api-key (the head is zeroed once sent, by
        `send`)."""
        upstream = self.upstream
        lines = [
            b"%s %s%s HTTP/1.1\r\nhost: %s\r\n"
            % (method.encode(), upstream.prefix, path.encode(), upstream.host_header)
        ]
        for name, value in headers.items():
            lines.append(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1")))
        if body_length or method in ("POST", "PUT", "PATCH"):
            lines.append(b"content-length: %d\r\n" % body_length)
        if key is None:
            return bytearray(b"".join(lines) + b"\r\n")
        lines.append(b"x-api-key: ")
        return with_secret(b"".join(lines), key, b"\r\n\r\n")

    async def send(
        self, head: bytearray, body: bytes = b"", *, read_timeout: float
    ) -> ClientResponse:
        """Send a built head and body; the answer's head within `read_timeout` seconds. The
        head is zeroed once sent. Raises UpstreamError, ResponseCut or TimeoutError."""
        conn = await self.upstream.connect()
        try:
            conn.send(head, body)
            response_head = await conn.read_head(read_timeout)
        except BaseException:
            self.upstream.release(conn, reusable=False)
            raise
        finally:
            if conn.flushed or conn.closed:
                head[:] = bytes(len(head))
        return ClientResponse(self.upstream, conn, response_head, read_timeout)

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        read_timeout: float,
    ) -> ClientResponse:
        head = self.head(method, path, headers or {}, len(body))
        return await self.send(head, body, read_timeout=read_timeout)

    async def close(self) -> None:
        self.upstream.close()
