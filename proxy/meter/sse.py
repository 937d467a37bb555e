"""An incremental Server-Sent Events parser. Pure: bytes in, events out.

Chunks may split an event anywhere (inside a line, between \\r and \\n); every complete event
comes out exactly once. The proxy forwards each chunk before feeding it here, so parsing
never delays the client.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class SseEvent:
    name: str
    data: str


class SseParser:
    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[SseEvent]:
        buffer = self._buffer + chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        events = []
        start = 0
        while (end := buffer.find(b"\n\n", start)) >= 0:
            event = _parse_block(buffer[start:end])
            if event is not None:
                events.append(event)
            start = end + 2
        self._buffer = buffer[start:]
        return events

    @property
    def pending(self) -> bytes:
        """Bytes of an event not yet terminated (a cut stream leaves them here)."""
        return self._buffer


def _parse_block(block: bytes) -> SseEvent | None:
    name = "message"
    data: list[str] = []
    for raw_line in block.split(b"\n"):
        line = raw_line.decode("utf-8", "replace")
        if not line or line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
    if not data and name == "message":
        return None
    return SseEvent(name=name, data="\n".join(data))
