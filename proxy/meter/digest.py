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
class RequestDigests:
    request_sha256: str
    system_sha256: str | None = None
    message_sha256s: tuple[str, ...] = ()


class RequestFacts:
    """What the limits need before a call leaves (model, stream, max_tokens), and the
    request's digests, which only the record needs: `digests()` computes them on first use,
    which the meter makes once the request is on its way (the canonical hashing would
    otherwise sit between the sandbox and Anthropic)."""

    __slots__ = ("_body", "_data", "_digests", "max_tokens", "model", "stream")

    def __init__(self, body: bytes, data: Any = None) -> None:
        self._body: bytes | None = body
        self._data = data
        self._digests: RequestDigests | None = None
        if not isinstance(data, dict):
            self.model: str | None = None
            self.stream = False
            self.max_tokens: int | None = None
            return
        model, max_tokens = data.get("model"), data.get("max_tokens")
        self.model = model if isinstance(model, str) else None
        self.stream = data.get("stream") is True
        self.max_tokens = (
            max_tokens if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) else None
        )

    def digests(self) -> RequestDigests:
        if self._digests is None:
            digest = sha256_hex(self._body) if self._body else ""
            try:
                self._digests = _digests(digest, self._data)
            except (ValueError, RecursionError):  # nests too deeply to re-encode
                self._digests = RequestDigests(request_sha256=digest)
            self._body = self._data = None  # the parsed body is not kept past this
        return self._digests


def request_facts(body: bytes) -> RequestFacts:
    """What the meter and the limits need from a Messages request body. A body that is not
    a JSON object (or nests too deeply for Python's parser) is forwarded all the same,
    metered by its digest alone; Anthropic answers it."""
    try:
        return RequestFacts(body, json.loads(body) if body else None)
    except (ValueError, RecursionError):
        return RequestFacts(body)


def _digests(digest: str, data: Any) -> RequestDigests:
    if not isinstance(data, dict):
        return RequestDigests(request_sha256=digest)
    messages = data.get("messages")
    if not isinstance(messages, list):
        messages = []
    return RequestDigests(
        request_sha256=digest,
        system_sha256=canonical_sha256(data["system"]) if "system" in data else None,
        message_sha256s=tuple(
            canonical_sha256(m.get("content") if isinstance(m, dict) else m) for m in messages
        ),
    )
