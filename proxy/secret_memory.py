"""Memory for the one secret the proxy holds: a locked, never-dumped page, and in-place
wiping of the immutable copies Python makes of it.

- The page that holds the key bytes is `mlock`ed where the process may lock memory (no
  swap) and marked `MADV_DONTDUMP` (no core image).
- aiohttp needs the header value as a `str`: the proxy makes exactly one per armed key and,
  on clear, overwrites its characters in place (CPython only, compared with memcmp first).
- The header blocks aiohttp serialises are wiped by proxy/aiohttp_patch.py.

tests/security/test_key_memory.py reads the live process to prove the key is gone;
docs/security.md says what this does not cover (TLS library buffers).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import mmap
import sys

import structlog

log = structlog.get_logger(__name__)
PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.mlock.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_libc.memcmp.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
# Offset of the character data in a compact ASCII str (the struct is followed by the data).
_ASCII_DATA_OFFSET = sys.getsizeof("") - 1


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
