"""Zero each raw read once aiohttp's parser is done with it.

A key upload arrives in a request body. The socket read that carried it is a `bytes` the
event loop frees after aiohttp's parser has consumed it, and freed memory keeps its content
until reused: a copy of the key would outlive the request in this long-lived process. This
wraps `RequestHandler.data_received` so that a read nothing else still holds (its reference
count says so) is overwritten with zeros right after parsing. The parser copies what it
keeps, so nothing reads those bytes again. tests/security/test_control_key_memory.py reads
the live process after an upload to prove no copy is left.
"""

from __future__ import annotations

import sys
from typing import Any

from aiohttp import web_protocol

from core.wipe import wipe_bytes

# The caller's reference, this wrapper's argument and getrefcount's own: nothing else.
_UNSHARED = 3


def install() -> None:
    """Idempotent: wrap aiohttp's request handler once per process."""
    original = web_protocol.RequestHandler.data_received
    if hasattr(original, "__wrapped__"):
        return

    def data_received_then_wiped(self: Any, data: bytes) -> None:
        original(self, data)
        if sys.getrefcount(data) <= _UNSHARED:
            wipe_bytes(data)

    data_received_then_wiped.__wrapped__ = original  # type: ignore[attr-defined]
    web_protocol.RequestHandler.data_received = data_received_then_wiped  # type: ignore[method-assign]
