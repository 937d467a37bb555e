"""The one patch to aiohttp's internals: wiping the header blocks that carry the key.

aiohttp serialises each request's header block into a `bytes` that it frees once sent;
freed memory keeps its content, so the key would outlive the call in the heap. While a call
runs under `wiping_header_blocks()`, each block serialised for it is kept and overwritten in
place when the call ends (the response is in by then, so the block has been sent). aiohttp
would also join that block with the first body bytes into one more `bytes` (on Python
< 3.12.9 always); for a kept block the two are written one after the other instead, so no
joined copy exists.

It hooks two private names, `http_writer._serialize_headers` and
`StreamWriter._writelines`, so aiohttp is pinned to the minor version this was tested on
(pyproject.toml). `metrux proxy run` installs it once, before anything else, and refuses to
start if it cannot. tests/proxy/test_aiohttp_patch.py proves the hook fires and zeroes the
block; tests/security/test_key_memory.py proves, on a live proxy, that no copy is left.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar

from aiohttp import http_writer

from core.wipe import wipe_bytes

_blocks: ContextVar[list[bytes] | None] = ContextVar("header_blocks", default=None)


class PatchUnavailable(RuntimeError):
    """This aiohttp lacks the internals the patch hooks: the proxy must not start."""


def _keeping(serialize: Callable[..., bytes]) -> Callable[..., bytes]:
    def serialize_and_keep(status_line: str, headers: Mapping[str, str]) -> bytes:
        block = serialize(status_line, headers)
        kept = _blocks.get()
        # Only the upstream request carries the key; response blocks may still sit in a
        # slow client's send buffer and are left alone.
        if kept is not None and "x-api-key" in headers:
            kept.append(block)
        return block

    serialize_and_keep.__wrapped__ = serialize  # type: ignore[attr-defined]
    return serialize_and_keep


def _unjoined(writelines: Callable[..., None]) -> Callable[..., None]:
    def writelines_unjoined(writer: http_writer.StreamWriter, chunks: Sequence[bytes]) -> None:
        kept = _blocks.get()
        if kept and chunks and chunks[0] is kept[-1]:
            for chunk in chunks:
                writer._write(chunk)
            return
        writelines(writer, chunks)

    writelines_unjoined.__wrapped__ = writelines  # type: ignore[attr-defined]
    return writelines_unjoined


def install() -> None:
    """Hook aiohttp's header serialisation and coalesced writes (idempotent). Raises
    PatchUnavailable if this aiohttp lacks either hook."""
    serialize = getattr(http_writer, "_serialize_headers", None)
    writelines = getattr(http_writer.StreamWriter, "_writelines", None)
    if serialize is None or writelines is None or not hasattr(http_writer.StreamWriter, "_write"):
        raise PatchUnavailable(
            "this aiohttp lacks _serialize_headers or StreamWriter._writelines: the header "
            "blocks that carry the key could not be wiped"
        )
    if not hasattr(serialize, "__wrapped__"):
        http_writer._serialize_headers = _keeping(serialize)
    if not hasattr(writelines, "__wrapped__"):
        http_writer.StreamWriter._writelines = _unjoined(writelines)  # type: ignore[method-assign]


def installed() -> bool:
    return hasattr(getattr(http_writer, "_serialize_headers", None), "__wrapped__")


def kept_blocks() -> list[bytes]:
    """The blocks kept so far in the current `wiping_header_blocks()` (for the tests)."""
    return list(_blocks.get() or ())


@contextlib.contextmanager
def wiping_header_blocks() -> Iterator[None]:
    """Wipe, on exit, every header block aiohttp serialised inside the block (this task)."""
    kept: list[bytes] = []
    token = _blocks.set(kept)
    try:
        yield
    finally:
        _blocks.reset(token)
        for block in kept:
            wipe_bytes(block)
        kept.clear()
