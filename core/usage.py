"""The usage record: one per upstream call, from a proxy to the control plane.

A proxy posts records to the control plane in batches (JSON); the control plane queues
them as one JSON field on its internal Redis stream, and they are ingested idempotently by
`record_id`. No prompt or response text is ever part of a record: only counts, timings,
identifiers and SHA-256 digests.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

STREAM_FIELD = "record"
GENERATION_ENDPOINT = "/v1/messages"  # the calls that count against a session's budget
SCHEMA_VERSION = 1


# Not frozen: a frozen dataclass sets each of its 35 fields through object.__setattr__,
# four times the cost of a plain one, and the proxy makes one record per call.
@dataclasses.dataclass(slots=True)
class UsageRecord:
    record_id: str
    session_id: str
    tenant_id: str
    actor: str  # candidate | grader
    method: str
    endpoint: str  # path without the query string
    started_at: str  # ISO 8601, UTC
    stream: bool
    http_status: int | None
    complete: bool
    model_requested: str | None = None
    model_served: str | None = None
    upstream_request_id: str | None = None
    stop_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    # The output tokens the proxy reserved for this call (its max_tokens), if a generation.
    reserved_output_tokens: int | None = None
    # Anthropic's usage object(s) exactly as received: the body's `usage`, or for a stream
    # {"message_start": …, "message_delta": …} (the last delta).
    usage: dict[str, Any] | None = None
    ttfb_ms: float | None = None
    latency_ms: float | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    request_sha256: str | None = None
    system_sha256: str | None = None
    message_sha256s: list[str] = dataclasses.field(default_factory=list)
    response_sha256: str | None = None  # the exact response bytes (the whole SSE stream)
    response_content_sha256: str | None = None  # the assembled `content` array
    error_type: str | None = None
    # The transcript digest chain (core/transcript.py): this call's place and link.
    chain_seq: int | None = None
    chain_prev: str | None = None
    chain_link: str | None = None
    # The upstream's answer held the customer's key (or its last characters); the proxy
    # overwrote it before the sandbox saw it (proxy/reflection.py). Audited as key:reflected.
    key_reflected: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The record as a JSON object (how a proxy posts it to the control plane)."""
        # A flat field walk: dataclasses.asdict deep-copies and was measurable per call.
        return {name: getattr(self, name) for name in _FIELD_NAMES}

    def to_json(self) -> bytes:
        """The record as compact JSON: what a proxy keeps until the control plane has it, and
        posts (one allocation of about 1.5 KB, against about 1.9 KB in some 40 objects)."""
        return _COMPACT.encode(self.as_dict()).encode()

    def to_fields(self) -> dict[str, str]:
        """The Redis stream entry for this record (the control plane's ingest stream)."""
        return {STREAM_FIELD: json.dumps({"v": SCHEMA_VERSION, **self.as_dict()})}

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes] | dict[str, str]) -> UsageRecord:
        raw = fields.get(STREAM_FIELD) or fields.get(STREAM_FIELD.encode())  # type: ignore[call-overload]
        if raw is None:
            raise ValueError("stream entry has no record field")
        data = json.loads(raw)
        data.pop("v", None)
        return cls(**{k: v for k, v in data.items() if k in _FIELD_NAMES})


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(UsageRecord))
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def charged_output_tokens(
    *, complete: bool, http_status: int | None, output_tokens: int | None, reserved: int | None
) -> int:
    """What a generation call counts against the session's output budget. Pure.

    A complete answer counts what Anthropic reported (an error answer with no usage, none).
    A call that did not complete (the client aborted, the stream was cut or timed out)
    counts its whole reservation, or what was seen if that is more: the tokens generated
    before the cut are unknown, and Anthropic bills them.
    """
    observed = output_tokens or 0
    if not complete:
        return max(observed, reserved or 0)
    if output_tokens is not None:
        return output_tokens
    if http_status is not None and http_status >= 400:
        return 0
    return reserved or 0
