"""The session's Anthropic key: one bytearray, sealed → armed → cleared.

The key is never a `str` except transiently for the outgoing header, never in a repr, and
zeroed in place on clear. Process exit is the real guarantee (DESIGN.md, decision D1): the
proxy exits after clearing.
"""

from __future__ import annotations

from enum import StrEnum


class KeyState(StrEnum):
    SEALED = "sealed"
    ARMED = "armed"
    CLEARED = "cleared"


class KeyCleared(Exception):
    """The key is not (or no longer) available."""


class SessionKey:
    __slots__ = ("_buffer", "_header", "_state")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._header: str | None = None
        self._state = KeyState.SEALED

    def __repr__(self) -> str:
        return f"<SessionKey {self._state.value}>"

    __str__ = __repr__

    def __reduce__(self) -> object:
        raise TypeError("SessionKey cannot be pickled")

    @property
    def state(self) -> KeyState:
        return self._state

    def arm(self, buffer: bytearray) -> None:
        """Take ownership of a decrypted key buffer (the caller must not keep a reference)."""
        if self._state is not KeyState.SEALED:
            raise KeyCleared(f"cannot arm a {self._state.value} key")
        self._buffer = buffer
        self._state = KeyState.ARMED

    def header_value(self) -> str:
        """The key as the str an HTTP header needs; raises KeyCleared once cleared.

        One str is made per armed key and reused for every call, so calls do not multiply
        the copies left in the heap.
        """
        if self._state is not KeyState.ARMED:
            raise KeyCleared(f"key is {self._state.value}")
        if self._header is None:
            self._header = self._buffer.decode("ascii")
        return self._header

    def clear(self) -> None:
        """Zero the buffer and forget the header string. Idempotent."""
        self._buffer[:] = bytes(len(self._buffer))
        self._header = None
        self._state = KeyState.CLEARED

    def buffer_is_zeroed(self) -> bool:
        return not any(self._buffer)
