"""SHA-256 digests of requests and responses. Pure functions.

Structured parts (the system prompt, each message's content, the response content) are
hashed in a canonical JSON form (sorted keys, no spaces, UTF-8), so equal content gives
equal digests whatever the client's formatting; the whole request body is hashed as sent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Made once: json.dumps with options builds a new encoder on every call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_sha256(value: Any) -> str:
    if isinstance(value, str):
        return sha256_hex(value.encode("utf-8"))
    return sha256_hex(_CANONICAL.encode(value).encode("utf-8"))


@dataclasses.dataclass(frozen=True, slots=True)
class RequestFacts:
    request_sha256: str
    model: str | None = None
    stream: bool = False
    max_tokens: int | None = None
    system_sha256: str | None = None
    message_sha256s: tuple[str, ...] = ()


def request_facts(body: bytes) -> RequestFacts:
    """What the meter and the limits need from a Messages request body. A body that is not
    a JSON object (or nests too deeply for Python's parser) is forwarded all the same,
    metered by its digest alone; Anthropic answers it."""
    digest = sha256_hex(body)
    try:
        return _facts(digest, json.loads(body) if body else None)
    except (ValueError, RecursionError):
        return RequestFacts(request_sha256=digest)


def _facts(digest: str, data: Any) -> RequestFacts:
    if not isinstance(data, dict):
        return RequestFacts(request_sha256=digest)
    max_tokens = data.get("max_tokens")
    messages = data.get("messages") if isinstance(data.get("messages"), list) else []
    return RequestFacts(
        request_sha256=digest,
        model=data.get("model") if isinstance(data.get("model"), str) else None,
        stream=data.get("stream") is True,
        max_tokens=max_tokens
        if isinstance(max_tokens, int) and not isinstance(max_tokens, bool)
        else None,
        system_sha256=canonical_sha256(data["system"]) if "system" in data else None,
        message_sha256s=tuple(
            canonical_sha256(m.get("content") if isinstance(m, dict) else m) for m in messages
        ),
    )
