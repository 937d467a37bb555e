"""Writing what the sandbox receives: response heads and body framing. Pure.

A response whose length the upstream gave keeps it, and its body passes as it came; any
other body is sent chunked, each chunk as soon as it arrives, so a stream's events reach
the client when the upstream sends them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK: Final = b"0\r\n\r\n"


def response_head(
    status: int,
    reason: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    *,
    content_length: int | None,
    keep_alive: bool,
) -> bytes:
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason or b"-")]
    lines.extend(b"%s: %s\r\n" % pair for pair in headers)
    if content_length is None:
        lines.append(b"transfer-encoding: chunked\r\n")
    else:
        lines.append(b"content-length: %d\r\n" % content_length)
    if not keep_alive:
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


class BodyFraming:
    """Frames a response body: as it is for a known length, else chunk by chunk."""

    __slots__ = ("chunked",)

    def __init__(self, content_length: int | None) -> None:
        self.chunked = content_length is None

    def chunk(self, data: bytes) -> bytes:
        if not self.chunked:
            return data
        return b"%x\r\n%s\r\n" % (len(data), data)

    def end(self) -> bytes:
        return _LAST_CHUNK if self.chunked else b""
