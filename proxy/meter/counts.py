"""Fold Anthropic responses into what the usage record keeps. Pure functions and classes.

Usage is kept exactly as Anthropic sent it; the normalised counts take each field from the
last `message_delta` when it carries it (cumulative) and from `message_start` otherwise.
Cache tokens are never folded into input tokens. The response content is reassembled from
the stream's deltas so that its digest equals the digest of the same non-streamed reply.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from proxy.meter.sse import SseEvent

TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)


def token_counts(*usages: dict[str, Any] | None) -> dict[str, int | None]:
    """Each count from the last usage object that has it as an integer."""
    counts: dict[str, int | None] = dict.fromkeys(TOKEN_FIELDS)
    for usage in usages:
        if not isinstance(usage, dict):
            continue
        for field in TOKEN_FIELDS:
            value = usage.get(field)
            if isinstance(value, int) and not isinstance(value, bool):
                counts[field] = value
    return counts


class StreamFold:
    """Accumulates a Messages SSE stream's events."""

    __slots__ = (
        "_blocks",
        "_partial_json",
        "error_type",
        "message_stopped",
        "model",
        "stop_reason",
        "usage_delta",
        "usage_start",
    )

    def __init__(self) -> None:
        self.model: str | None = None
        self.usage_start: dict[str, Any] | None = None
        self.usage_delta: dict[str, Any] | None = None
        self.stop_reason: str | None = None
        self.error_type: str | None = None
        self.message_stopped = False
        self._blocks: dict[int, dict[str, Any]] = {}
        self._partial_json: dict[int, list[str]] = {}

    def add(self, event: SseEvent) -> None:
        if event.name == "ping":
            return
        try:
            data = json.loads(event.data)
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        kind = data.get("type", event.name)
        handler = _HANDLERS.get(kind) if isinstance(kind, str) else None  # a list is unhashable
        if handler is not None:
            handler(self, data)

    def _on_delta(self, data: dict[str, Any]) -> None:
        self._delta(data.get("index"), _mapping(data.get("delta")))

    def _on_block_start(self, data: dict[str, Any]) -> None:
        index = data.get("index")
        if isinstance(index, int) and isinstance(data.get("content_block"), dict):
            self._blocks[index] = dict(data["content_block"])

    def _on_block_stop(self, data: dict[str, Any]) -> None:
        self._finish_block(data.get("index"))

    def _on_message_start(self, data: dict[str, Any]) -> None:
        message = _mapping(data.get("message"))
        self.model = message.get("model")
        self.usage_start = message.get("usage")

    def _on_message_delta(self, data: dict[str, Any]) -> None:
        self.stop_reason = _mapping(data.get("delta")).get("stop_reason", self.stop_reason)
        if isinstance(data.get("usage"), dict):
            self.usage_delta = data["usage"]

    def _on_message_stop(self, data: dict[str, Any]) -> None:
        self.message_stopped = True

    def _on_error(self, data: dict[str, Any]) -> None:
        self.error_type = _mapping(data.get("error")).get("type", "error")

    def _delta(self, index: object, delta: dict[str, Any]) -> None:
        block = self._blocks.get(index) if isinstance(index, int) else None
        if block is None:
            return
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = block.get("text", "") + delta.get("text", "")
        elif kind == "input_json_delta":
            self._partial_json.setdefault(index, []).append(delta.get("partial_json", ""))  # type: ignore[arg-type]
        elif kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
        elif kind == "signature_delta":
            block["signature"] = block.get("signature", "") + delta.get("signature", "")
        elif kind == "citations_delta":
            block.setdefault("citations", []).append(delta.get("citation"))

    def _finish_block(self, index: object) -> None:
        pieces = self._partial_json.pop(index, None) if isinstance(index, int) else None
        if pieces is not None and isinstance(index, int) and index in self._blocks:
            text = "".join(pieces)
            try:
                self._blocks[index]["input"] = json.loads(text) if text else {}
            except ValueError:
                self._blocks[index]["input"] = text

    @property
    def content(self) -> list[dict[str, Any]]:
        return [self._blocks[i] for i in sorted(self._blocks)]

    @property
    def usage(self) -> dict[str, Any] | None:
        if self.usage_start is None and self.usage_delta is None:
            return None
        return {"message_start": self.usage_start, "message_delta": self.usage_delta}

    def counts(self) -> dict[str, int | None]:
        return token_counts(self.usage_start, self.usage_delta)


def _mapping(value: object) -> dict[str, Any]:
    """A JSON object as it came, or an empty one for anything else an upstream sent."""
    return value if isinstance(value, dict) else {}


# The stream events that change what a fold holds, by their type.
_HANDLERS: dict[str, Callable[[StreamFold, dict[str, Any]], None]] = {
    "content_block_delta": StreamFold._on_delta,
    "content_block_start": StreamFold._on_block_start,
    "content_block_stop": StreamFold._on_block_stop,
    "message_start": StreamFold._on_message_start,
    "message_delta": StreamFold._on_message_delta,
    "message_stop": StreamFold._on_message_stop,
    "error": StreamFold._on_error,
}


def fold_json(body: bytes) -> dict[str, Any]:
    """What a non-streamed JSON reply (a message, count_tokens, models, or an error) holds."""
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    if data.get("type") == "error":
        return {"error_type": (data.get("error") or {}).get("type", "error")}
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
    if usage is None and isinstance(data.get("input_tokens"), int):
        usage = {"input_tokens": data["input_tokens"]}  # count_tokens replies
    return {
        "model": data.get("model") if data.get("type") == "message" else None,
        "usage": usage,
        "stop_reason": data.get("stop_reason"),
        "content": data.get("content") if isinstance(data.get("content"), list) else None,
    }
