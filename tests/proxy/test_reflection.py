"""The key an upstream echoes back is overwritten, whatever the chunking, and only it."""

from __future__ import annotations

import secrets
import string

from hypothesis import given
from hypothesis import strategies as st

from proxy.keyring import SessionKey
from proxy.reflection import TAIL, BodyScrubber, scrub_headers

ALPHABET = string.ascii_letters + string.digits


def _key() -> tuple[SessionKey, bytes]:
    raw = ("sk-ant-api03-" + "".join(secrets.choice(ALPHABET) for _ in range(93)) + "AA").encode()
    key = SessionKey()
    key.arm(bytearray(raw))
    return key, raw


def _relay(key: SessionKey, body: bytes, cuts: list[int]) -> tuple[bytes, int, int]:
    scrubber = BodyScrubber(key)
    out, held_most, start = b"", 0, 0
    for cut in [*sorted(set(cuts)), len(body)]:
        out += scrubber.feed(body[start:cut])
        held_most = max(held_most, len(scrubber._held))
        start = cut
    return out + scrubber.finish(), scrubber.hits, held_most


@given(
    st.lists(st.sampled_from(["event: x\ndata: ", "{}", "\n\n", "KEY", "TAIL", "AA", "s"])),
    st.lists(st.integers(min_value=0, max_value=2000), max_size=30),
)
def test_any_chunking_overwrites_every_echo_and_nothing_else(
    parts: list[str], cuts: list[int]
) -> None:
    key, raw = _key()
    pieces = {"KEY": raw, "TAIL": raw[-TAIL:]}
    body = b"".join(pieces.get(part, part.encode()) for part in parts)
    expected = b"".join(
        b"*" * len(pieces[part]) if part in pieces else part.encode() for part in parts
    )
    out, hits, held_most = _relay(key, body, [c for c in cuts if c <= len(body)])
    assert out == expected
    assert len(out) == len(body)  # a Content-Length still holds
    assert hits == sum(part in pieces for part in parts)
    assert held_most < len(raw)


def test_an_sse_stream_without_the_key_is_never_held_back() -> None:
    key, _ = _key()
    scrubber = BodyScrubber(key)
    for event in (b"event: ping\ndata: {}\n\n", b'data: {"text": "sk-"}\n\n'):
        assert scrubber.feed(event) == event


def test_headers_holding_the_key_are_overwritten() -> None:
    key, raw = _key()
    headers = [(b"x-echo", b"k=" + raw), (b"x-tail", raw[-TAIL:]), (b"request-id", b"req_1")]
    scrubbed, hits = scrub_headers(headers, key)
    assert scrubbed == [
        (b"x-echo", b"k=" + b"*" * len(raw)),
        (b"x-tail", b"*" * TAIL),
        (b"request-id", b"req_1"),
    ]
    assert hits == 2
    clean = [(b"request-id", b"req_1")]
    assert scrub_headers(clean, key) == (clean, 0)


def test_after_the_key_is_cleared_bytes_pass_and_nothing_is_held() -> None:
    key, raw = _key()
    scrubber = BodyScrubber(key)
    assert scrubber.feed(b"abc" + raw[:5]) == b"abc"  # could begin the key: held
    key.clear()
    assert scrubber.feed(b"xyz") == raw[:5] + b"xyz"
    assert scrubber.finish() == b""
