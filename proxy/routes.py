"""The routes the proxy serves: the Anthropic API surface the clients use, and its own
disconnect and keepalive calls for the sandbox launcher. Pure.

Anything else is a 404 in Anthropic's error shape and is never forwarded. Paths are
matched as sent, percent-encoding included: a model id that is, or decodes to, `.` or
`..`, or holds a slash, is not a model id.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from urllib.parse import unquote_to_bytes


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


def _is_model_id(segment: bytes) -> bool:
    if not segment or b"/" in segment:
        return False
    decoded = unquote_to_bytes(segment)
    return decoded not in (b".", b"..") and not any(c in decoded for c in b"/\\\x00")


def match(method: bytes, path: bytes) -> Route | None:
    route = _EXACT.get((method, path))
    if route is not None:
        return route
    if (
        method == b"GET"
        and path.startswith(_MODEL_PREFIX)
        and _is_model_id(path[len(_MODEL_PREFIX) :])
    ):
        return _MODEL
    return None
