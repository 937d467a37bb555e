"""The session's Anthropic key: one buffer, sealed → armed → cleared.

The key lives in one writable buffer (a locked, never-dumped page in the real proxy) and
is never a `str` or `bytes`: each call copies it into the upstream request head, a
`bytearray` the proxy zeroes once the head is sent. It is never in a repr. Process exit is
the real guarantee (DESIGN.md, decision D1): the proxy exits after clearing.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from proxy.secret_memory import LockedBuffer


class KeyState(StrEnum):
    SEALED = "sealed"
    ARMED = "armed"
    CLEARED = "cleared"


class KeyCleared(Exception):
    """The key is not (or no longer) available."""


class SessionKey:
    __slots__ = ("_buffer", "_memory", "_state", "alphabet")

    def __init__(self) -> None:
        self._buffer: bytearray | memoryview = bytearray()
        self._memory: LockedBuffer | None = None
        self._state = KeyState.SEALED
        # The bytes the key is made of (its character set, not the key), for the
        # reflection scrub's quick test of a chunk's last byte (proxy/reflection.py).
        self.alphabet: frozenset[int] = frozenset()

    def __repr__(self) -> str:
        return f"<SessionKey {self._state.value}>"

    __str__ = __repr__

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("SessionKey cannot be pickled")

    @property
    def state(self) -> KeyState:
        return self._state

    @property
    def armed(self) -> bool:
        return self._state is KeyState.ARMED

    def arm(self, buffer: bytearray | memoryview, memory: LockedBuffer | None = None) -> None:
        """Take ownership of a decrypted key buffer (the caller must not keep a reference),
        and of the locked memory it lies in, if any."""
        if self._state is not KeyState.SEALED:
            raise KeyCleared(f"cannot arm a {self._state.value} key")
        self._buffer = buffer
        self._memory = memory
        self._state = KeyState.ARMED
        self.alphabet = frozenset(buffer)

    @property
    def size(self) -> int:
        return len(self._buffer)

    def copy_into(self, target: memoryview) -> None:
        """Copy the key's bytes into `target` (exactly `size` bytes of a buffer the caller
        owns, sized in advance: a buffer that grows after the key is in would leave a copy
        in the memory it gives back). Raises KeyCleared once cleared."""
        if self._state is not KeyState.ARMED:
            raise KeyCleared(f"key is {self._state.value}")
        target[:] = self._buffer

    def view(self) -> memoryview | None:
        """A view of the key's bytes, for searching responses for it (proxy/reflection.py);
        None once cleared. The caller releases it before anything else runs: a view held
        across an await would keep the page from being released."""
        if self._state is not KeyState.ARMED:
            return None
        return memoryview(self._buffer)

    def clear(self) -> None:
        """Zero the buffer in place and release its page. Idempotent."""
        self._buffer[:] = bytes(len(self._buffer))
        self._state = KeyState.CLEARED
        self.alphabet = frozenset()
        if self._memory is not None:
            self._buffer = bytearray()  # release the view so the mapping can close
            self._memory.close()
            self._memory = None

    def buffer_is_zeroed(self) -> bool:
        return not any(self._buffer)
