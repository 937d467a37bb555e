"""Memory for the one secret the proxy holds: a locked, never-dumped page, and in-place
wiping of the immutable copies Python and aiohttp make of it.

- The page that holds the key bytes is `mlock`ed where the process may lock memory (no
  swap) and marked `MADV_DONTDUMP` (no core image).
- aiohttp needs the header value as a `str`: the proxy makes exactly one per armed key and,
  on clear, overwrites its characters in place (CPython only, compared with memcmp first).
- aiohttp serialises each request's header block into a `bytes` that it frees once sent;
  freed memory keeps its content, so the key would outlive the call in the heap. While a
  call runs under `wiping_header_blocks()`, each block serialised for it is kept and
  overwritten in place when the call ends (the response is in by then, so the block has
  been sent). aiohttp would also join that block with the first body bytes into one more
  `bytes` (on Python < 3.12.9 always); for a kept block the two are written one after the
  other instead, so no joined copy exists.

tests/security/test_key_memory.py reads the live process to prove the key is gone;
docs/security.md says what this does not cover (TLS library buffers).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import mmap
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar

import structlog
from aiohttp import http_writer

log = structlog.get_logger(__name__)
PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.mlock.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_libc.memcmp.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
# Offset of the character data in a compact ASCII str (the struct is followed by the data).
_ASCII_DATA_OFFSET = sys.getsizeof("") - 1
_BYTES_DATA_OFFSET = sys.getsizeof(b"") - 1
_blocks: ContextVar[list[bytes] | None] = ContextVar("header_blocks", default=None)


class LockedBuffer:
    """An anonymous mapping, locked in RAM and left out of core dumps, zeroed on close."""

    __slots__ = ("_map", "_size", "locked")

    def __init__(self, size: int) -> None:
        self._size = size
        pages = max(1, -(-size // PAGE)) * PAGE
        self._map = mmap.mmap(-1, pages, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if hasattr(mmap, "MADV_DONTDUMP"):
            self._map.madvise(mmap.MADV_DONTDUMP)
        address = ctypes.addressof(ctypes.c_char.from_buffer(self._map))
        # mlock needs CAP_IPC_LOCK or RLIMIT_MEMLOCK room; without it the page may be
        # swapped, so production pods run without swap (deploy/README.md).
        self.locked = _libc.mlock(ctypes.c_void_p(address), ctypes.c_size_t(pages)) == 0
        if not self.locked:
            log.warning("key_page_not_locked", errno=ctypes.get_errno())

    def __repr__(self) -> str:
        return f"<LockedBuffer {self._size}B locked={self.locked}>"

    def view(self) -> memoryview:
        """A writable view of exactly `size` bytes."""
        return memoryview(self._map)[: self._size]

    def wipe(self) -> None:
        self._map.seek(0)
        self._map.write(bytes(len(self._map)))

    def close(self) -> None:
        """Zero the page and unmap it. Idempotent."""
        if self._map.closed:
            return
        self.wipe()
        # A view still alive (an error path): zeroed now, unmapped at exit.
        with contextlib.suppress(BufferError):
            self._map.close()


def wipe_str(value: str, expected: bytearray | memoryview) -> bool:
    """Overwrite the characters of `value` with zeros, in place, if (and only if) the
    bytes at the computed address equal the writable buffer `expected` (compared with
    memcmp, so no further copy is made). The string must never be used again. Returns
    whether it was wiped."""
    size = len(value)
    if sys.implementation.name != "cpython" or not value.isascii() or size != len(expected):
        return False
    if size == 0:
        return False
    address = id(value) + _ASCII_DATA_OFFSET
    expected_address = ctypes.addressof(ctypes.c_char.from_buffer(expected))
    if _libc.memcmp(address, expected_address, size) != 0:
        return False
    ctypes.memset(address, 0, size)
    return True


def wipe_bytes(value: bytes) -> None:
    """Overwrite a `bytes` object's content with zeros, in place (CPython only). It must
    not be used again."""
    if sys.implementation.name != "cpython" or len(value) < 2:
        return  # empty and one-byte bytes are shared singletons
    address = id(value) + _BYTES_DATA_OFFSET
    probe = (ctypes.c_char * 1).from_address(address)
    if probe.raw != value[:1]:
        return  # not the layout this code knows: leave it rather than corrupt memory
    ctypes.memset(address, 0, len(value))


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


def install_header_block_wiping() -> bool:
    """Hook aiohttp's header serialisation and coalesced writes (once per process). False
    if this aiohttp lacks either hook, in which case blocks are not wiped (the memory test
    fails on such an upgrade)."""
    serialize = getattr(http_writer, "_serialize_headers", None)
    writelines = getattr(http_writer.StreamWriter, "_writelines", None)
    if serialize is None or writelines is None or not hasattr(http_writer.StreamWriter, "_write"):
        log.warning("header_block_wiping_unavailable")
        return False
    if not hasattr(serialize, "__wrapped__"):
        http_writer._serialize_headers = _keeping(serialize)
    if not hasattr(writelines, "__wrapped__"):
        http_writer.StreamWriter._writelines = _unjoined(writelines)  # type: ignore[method-assign]
    return True


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
