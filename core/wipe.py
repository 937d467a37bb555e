"""Overwriting immutable buffers in place (CPython), for the few objects that held a
customer key and that nothing else will read again.

Freed memory keeps its content until it is reused, so a `bytes` or `str` that carried a key
outlives its last reference in the heap. These helpers zero such an object's data where the
code that made it is done with it. They check the object's layout first and do nothing on an
interpreter whose layout they do not know.
"""

from __future__ import annotations

import ctypes
import sys

_BYTES_DATA_OFFSET = sys.getsizeof(b"") - 1
_ASCII_DATA_OFFSET = sys.getsizeof("") - 1
_CPYTHON = sys.implementation.name == "cpython"


def wipe_bytes(value: bytes) -> bool:
    """Zero a `bytes` object's content; False if it was left alone (too short to be
    unshared, or an unknown layout). It must not be used again."""
    if not _CPYTHON or type(value) is not bytes or len(value) < 2:
        return False  # the empty and one-byte objects are shared singletons
    address = id(value) + _BYTES_DATA_OFFSET
    if (ctypes.c_char * 1).from_address(address).raw != value[:1]:
        return False
    ctypes.memset(address, 0, len(value))
    return True


def wipe_ascii_str(value: str) -> bool:
    """Zero a compact ASCII `str`'s characters; False if it was left alone. It must not be
    used again, and must not be interned (a literal, or a short identifier-like string)."""
    if not _CPYTHON or type(value) is not str or len(value) < 2 or not value.isascii():
        return False
    address = id(value) + _ASCII_DATA_OFFSET
    if (ctypes.c_char * 1).from_address(address).raw != value[:1].encode():
        return False
    ctypes.memset(address, 0, len(value))
    return True
