"""Responses from the upstream: bytes in, the head, body chunks and the end out.

The upstream is trusted to speak HTTP, not to be well-behaved: a malformed response, or a
connection that ends before its message does, is a `ResponseCut` (the caller fails the
call; it never synthesises a clean end). A body delimited by the connection's close ends
cleanly at end of file.
"""

from __future__ import annotations

import dataclasses

import httptools

from proxy.http.request import END, EndOfMessage


class ResponseCut(Exception):
    """The response is malformed or ended early."""


@dataclasses.dataclass(slots=True, eq=False)
class ResponseHead:
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    content_length: int | None = None
    chunked: bool = False
    content_type: bytes = b""
    request_id: bytes | None = None

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header; `name` in lower case."""
        for key, value in self.headers:
            if len(key) == len(name) and key.lower() == name:
                return value
        return None


ResponseEvent = ResponseHead | bytes | EndOfMessage
_KNOWN = frozenset({b"content-length", b"transfer-encoding", b"content-type", b"request-id"})


class ResponseReader:
    __slots__ = (
        "_events",
        "_head",
        "_headers",
        "_known",
        "_parser",
        "_reason",
        "complete",
        "keep_alive",
    )

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._events: list[ResponseEvent] = []
        self._headers: list[tuple[bytes, bytes]] = []
        self._known: dict[bytes, bytes] = {}  # the first value of each header read below
        self._reason = b""
        self._head: ResponseHead | None = None
        self.complete = False
        self.keep_alive = False  # known once complete: may the connection carry another call

    def next_message(self) -> None:
        """Ready for the next response on the same connection (llhttp goes on by itself)."""
        self._headers = []
        self._reason = b""
        self._head = None
        self.complete = False
        self.keep_alive = False

    def feed(self, data: bytes) -> list[ResponseEvent]:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            raise ResponseCut(f"malformed response: {exc}") from None
        events, self._events = self._events, []
        return events

    def eof(self) -> list[ResponseEvent]:
        """The connection ended: the end of a close-delimited body, or a cut."""
        head = self._head
        if self.complete:
            return []
        if head is not None and head.content_length is None and not head.chunked:
            self.complete = True
            return [END]
        raise ResponseCut("the upstream closed the connection mid-response")

    # httptools callbacks

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        lower = name.lower()
        if lower in _KNOWN:
            self._known.setdefault(lower, value)

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        known, self._known = self._known, {}
        if status < 200:
            # An interim response (we send no Expect: 100-continue upstream): skip it.
            self._headers, self._reason = [], b""
            return
        head = ResponseHead(
            status,
            self._reason,
            self._headers,
            content_type=known.get(b"content-type", b""),
            request_id=known.get(b"request-id"),
        )
        length = known.get(b"content-length")
        if length is not None:
            head.content_length = int(length)  # llhttp has checked it
        encoding = known.get(b"transfer-encoding")
        head.chunked = encoding is not None and encoding.lower().endswith(b"chunked")
        self._head = head
        self._events.append(head)

    def on_body(self, body: bytes) -> None:
        self._events.append(body)

    def on_message_complete(self) -> None:
        if self._head is None:
            return  # the end of an interim response
        self.complete = True
        self.keep_alive = self._parser.should_keep_alive()
        self._events.append(END)
