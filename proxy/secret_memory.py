"""Memory for the one secret the proxy holds: a locked, never-dumped page.

The page that holds the key bytes is `mlock`ed where the process may lock memory (no swap)
and marked `MADV_DONTDUMP` (no core image). The only other copies are the upstream request
heads, `bytearray`s the proxy zeroes once sent (proxy/headers.py, proxy/forward.py).

tests/security/test_key_memory.py reads the live process to prove the key is gone;
docs/security.md says what this does not cover (TLS library buffers).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import mmap

from core.hardening import warn

PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.mlock.argtypes = (ctypes.c_void_p, ctypes.c_size_t)


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
            warn(__name__, "key_page_not_locked", errno=ctypes.get_errno())

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
