"""SHA-256 digests of requests and responses. Pure functions.

Structured parts (the system prompt, each message's content, the response content) are
hashed in a canonical JSON form (sorted keys, no spaces, UTF-8), so equal content gives
equal digests whatever the client's formatting; the whole request body is hashed as sent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from json import decoder as _json_decoder
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


class DuplicateKey(ValueError):
    """A request body names one of its top-level fields twice."""


_DECODER = json.JSONDecoder()
_scanstring = _json_decoder.scanstring  # type: ignore[attr-defined]  # the C scanner
_SPACE = re.compile(r"[ \t\n\r]*")


def _skip(text: str, at: int) -> int:
    return _SPACE.match(text, at).end()  # type: ignore[union-attr]


def parse_top_level(text: str) -> Any:
    """`json.loads`, refusing a top-level object that names a field twice (DuplicateKey).

    The proxy decides on top-level fields (model, max_tokens, stream): a body that could be
    read with one `model` here and another at Anthropic must not pass. Each value is parsed
    by the C decoder; only the top-level keys are walked here, so the cost is that of
    json.loads (a hook on every object would double it for a long conversation)."""
    at = _skip(text, 0)
    if not text.startswith("{", at):
        return json.loads(text)
    fields: dict[str, Any] = {}
    at = _skip(text, at + 1)
    if text.startswith("}", at):
        end = _skip(text, at + 1)
    else:
        while True:
            if not text.startswith('"', at):
                raise ValueError("expected a field name")
            key, at = _scanstring(text, at + 1)
            at = _skip(text, at)
            if not text.startswith(":", at):
                raise ValueError("expected ':'")
            value, at = _DECODER.raw_decode(text, _skip(text, at + 1))
            if key in fields:
                raise DuplicateKey(key)
            fields[key] = value
            at = _skip(text, at)
            if text.startswith(",", at):
                at = _skip(text, at + 1)
                continue
            if not text.startswith("}", at):
                raise ValueError("expected ',' or '}'")
            end = _skip(text, at + 1)
            break
    if end != len(text):
        raise ValueError("extra data after the body")
    return fields


# Anthropic's server-side tools by the prefix of their versioned type (web_search_20250305,
# code_execution_20250825, …), and the MCP connector (its mcp_toolset tools, or a top-level
# mcp_servers list). They run at Anthropic and reach the internet from there.
_SERVER_TOOL_TYPES = (
    ("web_search_", "web_search"),
    ("web_fetch_", "web_fetch"),
    ("code_execution_", "code_execution"),
    ("mcp_toolset", "mcp"),
)


def server_tools_of(data: dict[str, Any]) -> frozenset[str]:
    """The server-side tools a Messages request asks for. Pure."""
    found: set[str] = set()
    tools = data.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        kind = tool.get("type") if isinstance(tool, dict) else None
        if isinstance(kind, str):
            found.update(name for prefix, name in _SERVER_TOOL_TYPES if kind.startswith(prefix))
    if data.get("mcp_servers"):
        found.add("mcp")
    return frozenset(found)


class RequestFacts:
    """What the limits need before a call leaves (model, stream, max_tokens), and the
    request's digests, which only the record needs: `digests()` computes them on first use,
    which the meter makes once the request is on its way (the canonical hashing would
    otherwise sit between the sandbox and Anthropic).

    `max_tokens` is None when absent and the value as sent otherwise; `max_tokens_valid`
    says whether it is a positive integer. `duplicate` names a top-level field the body
    names twice."""

    __slots__ = (
        "_body",
        "_data",
        "_digests",
        "duplicate",
        "max_tokens",
        "max_tokens_valid",
        "model",
        "parsed",
        "server_tools",
        "stream",
    )

    def __init__(self, body: bytes, data: Any = None, duplicate: str | None = None) -> None:
        self._body: bytes | None = body
        self._data = data
        self._digests: RequestDigests | None = None
        self.duplicate = duplicate
        self.parsed = isinstance(data, dict)  # a JSON object the limits could read
        self.server_tools = server_tools_of(data) if isinstance(data, dict) else frozenset()
        if not isinstance(data, dict):
            self.model: str | None = None
            self.stream = False
            self.max_tokens: int | None = None
            self.max_tokens_valid = False
            return
        model, max_tokens = data.get("model"), data.get("max_tokens")
        self.model = model if isinstance(model, str) else None
        self.stream = data.get("stream") is True
        self.max_tokens_valid = (
            isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens > 0
        )
        self.max_tokens = max_tokens if self.max_tokens_valid else None

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
    metered by its digest alone; Anthropic answers it. One that names a top-level field
    twice is marked (`duplicate`) for the proxy to refuse."""
    try:
        return RequestFacts(body, parse_top_level(body.decode("utf-8")) if body else None)
    except DuplicateKey as exc:
        return RequestFacts(body, duplicate=str(exc))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError included
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
