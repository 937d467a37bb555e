"""Requests from the sandbox: bytes in, parsed requests and body chunks out.

httptools (llhttp, Node.js's parser) parses strictly: Content-Length together with
Transfer-Encoding, two lengths, obsolete line folding, whitespace before a colon and
control characters in a header are all parse errors. What llhttp does not bound (the
number and size of headers, the size of a body) is bounded here. A malformed or oversized
request becomes a `Refusal`: the connection answers it and closes, since nothing after it
can be framed with certainty.
"""

from __future__ import annotations

import dataclasses
from typing import Final

import httptools

MAX_HEADERS: Final = 100
MAX_FIELD_BYTES: Final = 8190  # one header line, or the request target
MAX_HEAD_BYTES: Final = 65536


class EndOfMessage:
    """The request's body is complete."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "END"


END: Final = EndOfMessage()


class Refusal(Exception):
    """The request cannot be served: answer with this status and close the connection."""

    def __init__(self, status: int, type_: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message


@dataclasses.dataclass(slots=True, eq=False)
class Request:
    """A request's head. Names and values are the bytes the client sent; `path` and
    `query` come from the target, which must be a path (origin-form)."""

    method: bytes
    path: bytes
    query: bytes | None
    headers: list[tuple[bytes, bytes]]
    keep_alive: bool
    expects_continue: bool = False
    content_length: int | None = None
    # The first value of the headers the proxy itself reads, by lower-case name.
    known: dict[bytes, bytes] = dataclasses.field(default_factory=dict)

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header; `name` in lower case."""
        if name in KNOWN_HEADERS:
            return self.known.get(name)
        for key, value in self.headers:
            if len(key) == len(name) and key.lower() == name:
                return value
        return None

    @property
    def target(self) -> bytes:
        """What goes upstream: the path and query, never a scheme or host."""
        return self.path if self.query is None else self.path + b"?" + self.query


Event = Request | bytes | EndOfMessage
KNOWN_HEADERS = frozenset(
    {b"x-api-key", b"authorization", b"content-length", b"expect", b"content-type"}
)


class RequestReader:
    """Feed bytes; get back each request's head, its body chunks and its end, in order."""

    __slots__ = (
        "_began",
        "_body_bytes",
        "_events",
        "_head_bytes",
        "_headers",
        "_in_head",
        "_known",
        "_max_body",
        "_parser",
        "_url",
        "refusal",
        "upgraded",
    )

    def __init__(self, max_body: int) -> None:
        self._max_body = max_body
        self._parser = httptools.HttpRequestParser(self)
        self._events: list[Event] = []
        self._headers: list[tuple[bytes, bytes]] = []
        self._known: dict[bytes, bytes] = {}
        self._url = b""
        self._in_head = True
        self._began = False
        self._head_bytes = 0
        self._body_bytes = 0
        self.refusal: Refusal | None = None
        self.upgraded = False  # an Upgrade or CONNECT request ended the HTTP/1.1 stream

    def feed(self, data: bytes) -> list[Event]:
        """Parse `data`. After a request that cannot be served, `refusal` says why, and
        nothing more is parsed; the events before it are returned all the same."""
        if self.upgraded or self.refusal is not None:
            return []
        self._began = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # The request before the upgrade is whole; whatever follows is not HTTP/1.1
            # this proxy will read. It is answered, then the connection closes.
            self.upgraded = True
        except httptools.HttpParserCallbackError:
            if self.refusal is None:
                raise
        except httptools.HttpParserError as exc:
            if self.refusal is None:
                self.refusal = Refusal(400, "invalid_request_error", f"malformed request: {exc}")
        if self._in_head and not self._began and self.refusal is None:
            # A head still incomplete after this read: llhttp holds its partial line, so
            # bound it here (a head that began in this read is bounded by the read size).
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self.refusal = Refusal(431, "invalid_request_error", "request head is too large")
        events, self._events = self._events, []
        return events

    def _refuse(self, status: int, type_: str, message: str) -> None:
        self.refusal = Refusal(status, type_, message)
        raise self.refusal

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._began = True
        self._headers = []
        self._known = {}
        self._url = b""
        self._in_head = True
        self._head_bytes = 0
        self._body_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_FIELD_BYTES:
            self._refuse(414, "invalid_request_error", "request target is too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self._headers) >= MAX_HEADERS:
            self._refuse(431, "invalid_request_error", "too many request headers")
        if len(name) + len(value) > MAX_FIELD_BYTES:
            self._refuse(431, "invalid_request_error", "a request header is too large")
        self._headers.append((name, value))
        lower = name.lower()
        if lower in KNOWN_HEADERS:
            self._known.setdefault(lower, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self._parser
        if not self._url.startswith(b"/"):
            # Absolute-form (or `*`): the proxy is no forward proxy, and a host in the
            # target is one more way for a request to read two ways.
            self._refuse(400, "invalid_request_error", "send the request target as a path")
        try:
            url = httptools.parse_url(self._url)
        except httptools.HttpParserInvalidURLError:
            self._refuse(400, "invalid_request_error", "malformed request target")
        request = Request(
            method=parser.get_method(),
            path=url.path or b"/",
            query=url.query,
            headers=self._headers,
            keep_alive=parser.should_keep_alive(),
            known=self._known,
        )
        length = request.header(b"content-length")
        if length is not None:
            request.content_length = int(length)  # llhttp has checked it is digits
            if request.content_length > self._max_body:
                self._refuse(413, "request_too_large", "request body is too large")
        expect = request.header(b"expect")
        if expect is not None:
            if expect.lower() != b"100-continue":
                self._refuse(417, "invalid_request_error", "unsupported Expect header")
            request.expects_continue = True
        self._events.append(request)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self._max_body:
            self._refuse(413, "request_too_large", "request body is too large")
        self._events.append(body)

    def on_message_complete(self) -> None:
        self._in_head = True
        self._began = True  # what follows in this read is a new head
        self._head_bytes = 0
        self._events.append(END)
