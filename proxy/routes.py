"""The routes the proxy serves: the Anthropic API surface the clients use, and its own
disconnect and keepalive calls for the sandbox launcher. Pure.

Anything else is a 404 in Anthropic's error shape and is never forwarded. A path is
routed only if it reads one way: `plain_path` refuses (400) any path that percent-decoding
or dot-segment removal would change (any `%`, a `.` or `..` segment, an empty segment, a
backslash, a control or non-ASCII byte). What is routed is then exactly what is checked
and exactly what is forwarded. (Absolute-form targets are refused as they are parsed,
proxy/http/request.py.)
"""

from __future__ import annotations

import dataclasses
from enum import Enum


class Kind(Enum):
    RELAY = "relay"  # forwarded to Anthropic
    DISCONNECT = "disconnect"
    KEEPALIVE = "keepalive"


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    kind: Kind
    endpoint: str  # the template recorded in usage records and metrics
    generation: bool = False  # counts against the session's output-token budget


_EXACT = {
    (b"POST", b"/v1/messages"): Route(Kind.RELAY, "/v1/messages", generation=True),
    (b"POST", b"/v1/messages/count_tokens"): Route(Kind.RELAY, "/v1/messages/count_tokens"),
    (b"GET", b"/v1/models"): Route(Kind.RELAY, "/v1/models"),
    (b"POST", b"/_proxy/disconnect"): Route(Kind.DISCONNECT, "/_proxy/disconnect"),
    (b"POST", b"/_proxy/keepalive"): Route(Kind.KEEPALIVE, "/_proxy/keepalive"),
}
_MODEL = Route(Kind.RELAY, "/v1/models/{model_id}")
_MODEL_PREFIX = b"/v1/models/"


_UNPLAIN = frozenset(b"%\\") | frozenset(range(0x21)) | frozenset(range(0x7F, 0x100))


def plain_path(path: bytes) -> bool:
    """Whether the path reads one way: percent-decoding and dot-segment removal (RFC 3986)
    leave it as it is. Pure."""
    if not path.startswith(b"/") or _UNPLAIN.intersection(path):
        return False
    *inner, last = path[1:].split(b"/")
    return last not in (b".", b"..") and not any(s in (b"", b".", b"..") for s in inner)


def match(method: bytes, path: bytes) -> Route | None:
    """The route of a plain path (see `plain_path`), or None."""
    route = _EXACT.get((method, path))
    if route is not None:
        return route
    if (
        method == b"GET"
        and path.startswith(_MODEL_PREFIX)
        and len(path) > len(_MODEL_PREFIX)
        and b"/" not in path[len(_MODEL_PREFIX) :]
        and plain_path(path)
    ):
        return _MODEL
    return None
