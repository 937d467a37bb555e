"""The incremental SSE parser: any chunking gives the same events, exactly once."""

from __future__ import annotations

import pytest

from proxy.meter.sse import SseEvent, SseParser
from sandbox.standin import encode_event, stream_events

EVENTS = stream_events(["Hi", " there", " ünïcödé"])
WHOLE = b"".join(encode_event(name, data) for name, data in EVENTS)
EXPECTED = [name for name, _ in EVENTS]


def split_every(data: bytes, n: int) -> list[bytes]:
    return [data[i : i + n] for i in range(0, len(data), n)]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(WHOLE)])
def test_event_split_across_reads_is_parsed_once(size: int) -> None:
    parser = SseParser()
    events = [e for chunk in split_every(WHOLE, size) for e in parser.feed(chunk)]
    assert [e.name for e in events] == EXPECTED
    assert parser.pending == b""


def test_crlf_line_endings_split_between_cr_and_lf() -> None:
    crlf = WHOLE.replace(b"\n", b"\r\n")
    parser = SseParser()
    events = [e for chunk in split_every(crlf, 5) for e in parser.feed(chunk)]
    assert [e.name for e in events] == EXPECTED


def test_multiline_data_comments_and_default_name() -> None:
    parser = SseParser()
    assert parser.feed(b": keep-alive\n\ndata: a\ndata: b\n\nevent: x\ndata:c\n\n") == [
        SseEvent("message", "a\nb"),
        SseEvent("x", "c"),
    ]


def test_a_cut_stream_leaves_the_partial_event_pending() -> None:
    parser = SseParser()
    events = parser.feed(WHOLE[:-10])
    assert [e.name for e in events] == EXPECTED[:-1]
    assert parser.pending
