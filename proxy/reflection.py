"""Scrubbing the customer's key from what an upstream sends back. Pure, but for the key.

Anthropic never echoes a key, but a proxy must not trust that: an upstream that reflected
the key (in a header, or in a body, streamed or not) would hand it to the sandbox. Every
response header and every body chunk is searched for the whole key and for its last 16
characters (what a partly masked echo still shows); each hit is overwritten with `*` of the
same length, so a body's framing (its Content-Length) still holds, and counted.

A hit can straddle two chunks: the longest end of a chunk that could begin a match is held
back until the next chunk (or the end) decides. SSE events end in a newline, which begins
no key, so in practice nothing is held. The key is searched in place, through views of its
own buffer taken and released within each call: no copy of it is made here.
"""

from __future__ import annotations

from proxy.headers import Headers
from proxy.keyring import SessionKey

TAIL = 16  # the last characters of a key, as a masked echo shows them
_STAR = ord("*")


def _needles(key: SessionKey) -> list[memoryview]:
    view = key.view()
    return [] if view is None else [view, view[-TAIL:]]


def _overwrite(data: bytearray, needles: list[memoryview]) -> int:
    hits = 0
    for needle in needles:
        size = len(needle)
        at = data.find(needle)
        while at != -1:
            data[at : at + size] = bytes((_STAR,)) * size
            hits += 1
            at = data.find(needle, at + size)
    return hits


def _could_begin(data: bytes | bytearray, needles: list[memoryview]) -> int:
    """How many bytes at the end of `data` could be the start of a needle."""
    held = 0
    for needle in needles:
        first = needle[:1]
        at = data.find(first, max(0, len(data) - len(needle) + 1))
        while at != -1:
            if data.find(needle[: len(data) - at], at) == at:  # the rest of data begins it
                held = max(held, len(data) - at)
                break
            at = data.find(first, at + 1)
    return held


class BodyScrubber:
    """One response body's scrubber: `feed` each chunk, `finish` at the end."""

    __slots__ = ("_held", "_key", "hits")

    def __init__(self, key: SessionKey) -> None:
        self._key = key
        self._held = b""
        self.hits = 0

    def feed(self, chunk: bytes) -> bytes:
        """What of the body so far can go to the client (usually `chunk` itself, uncopied)."""
        needles = _needles(self._key)
        try:
            if not needles:  # cleared: nothing left to search for
                return self.finish() + chunk
            data: bytes | bytearray = self._held + chunk if self._held else chunk
            if data.find(needles[1]) != -1:  # every echo of the key holds its tail
                data = bytearray(data)
                self.hits += _overwrite(data, needles)
            # A chunk that ends in a byte no key is made of, as SSE events and JSON do,
            # cannot end in the start of an echo.
            keep = _could_begin(data, needles) if data and data[-1] in self._key.alphabet else 0
            if keep:
                self._held = bytes(data[-keep:])
                data = data[:-keep]
            else:
                self._held = b""
            return data if isinstance(data, bytes) else bytes(data)
        finally:
            for needle in reversed(needles):
                needle.release()

    def finish(self) -> bytes:
        held, self._held = self._held, b""
        return held


def scrub_headers(headers: Headers, key: SessionKey) -> tuple[Headers, int]:
    """The headers with the key (or its last characters) overwritten in any value."""
    needles = _needles(key)
    try:
        # Every echo of the whole key holds its tail too: one search per value decides.
        if not needles or all(value.find(needles[1]) == -1 for _, value in headers):
            return headers, 0
        out: Headers = []
        hits = 0
        for name, value in headers:
            data = bytearray(value)
            hits += _overwrite(data, needles)
            out.append((name, bytes(data)))
        return out, hits
    finally:
        for needle in reversed(needles):
            needle.release()
