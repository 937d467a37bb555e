"""Usage records as they arrive from a proxy: each checked on its own, then queued.

A proxy posts its records with its own credential. The session and tenant come from that
credential; a record that names any other session or tenant is refused (and counted),
never stored. Each record is validated alone, against the columns it will be stored in, so
one bad record is refused without holding up the others or the ingester behind them:
types, ranges and timestamps are checked, and a free-text field longer than its column
(a model name the candidate chose, say) is kept cut to fit, ending in TRUNCATED_MARK, so
the call is still accounted for. NUL characters, which PostgreSQL cannot store in text,
become U+FFFD. Accepted records go onto the internal Redis stream that the ingester
drains; the ingester makes them idempotent by record id (control/usage/ingest.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)
from redis.asyncio import Redis

from core.redis_names import RedisNames
from core.usage import UsageRecord

MAX_RECORDS_PER_BATCH = 500
MAX_BATCH_BYTES = 8 * 1024 * 1024
MAX_MESSAGES = 20_000  # message digests in one record
MAX_COUNT = 2**53  # byte counts (BIGINT): anything larger is not a real count
MAX_TOKENS = 2**31 - 1  # token counts are INTEGER columns
MAX_USAGE_BYTES = 16 * 1024  # Anthropic's usage object is a few hundred bytes
TRUNCATED_MARK = "…[cut]"


def _fit(limit: int) -> Callable[[Any], Any]:
    """A free-text value cut to `limit` characters (ending in TRUNCATED_MARK), with NULs
    replaced; anything that is not a string is left for the type check to refuse."""

    def fit(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        value = value.replace("\x00", "\ufffd")
        if len(value) > limit:
            return value[: limit - len(TRUNCATED_MARK)] + TRUNCATED_MARK
        return value

    return fit


Hex64 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Hex64OrEmpty = Annotated[str, StringConstraints(pattern=r"^(?:[0-9a-f]{64})?$")]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Tokens = Annotated[int, Field(ge=0, le=MAX_TOKENS)]
Text36 = Annotated[str, StringConstraints(min_length=1, max_length=36)]
Text64 = Annotated[str, BeforeValidator(_fit(64)), StringConstraints(min_length=1)]
Text200 = Annotated[str, BeforeValidator(_fit(200)), StringConstraints(min_length=1)]


class RecordIn(BaseModel):
    """A usage record as the proxy sends it; every bound is the column's."""

    model_config = ConfigDict(extra="ignore", strict=True)

    record_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
    session_id: Text36
    tenant_id: Text36
    actor: Annotated[str, StringConstraints(pattern=r"^(candidate|grader)$")]
    method: Annotated[str, StringConstraints(pattern=r"^[A-Z]{1,8}$")]
    endpoint: Text200
    started_at: str
    stream: bool
    http_status: Annotated[int, Field(ge=100, le=599)] | None
    complete: bool
    model_requested: Text200 | None = None
    model_served: Text200 | None = None
    upstream_request_id: Text200 | None = None
    stop_reason: Text64 | None = None
    input_tokens: Tokens | None = None
    output_tokens: Tokens | None = None
    cache_creation_input_tokens: Tokens | None = None
    cache_read_input_tokens: Tokens | None = None
    reserved_output_tokens: Tokens | None = None
    usage: dict[str, Any] | None = None
    ttfb_ms: Annotated[float, Field(ge=0)] | None = None
    latency_ms: Annotated[float, Field(ge=0)] | None = None
    bytes_in: Count = 0
    bytes_out: Count = 0
    request_sha256: Hex64OrEmpty | None = None  # empty: a call with no body
    system_sha256: Hex64 | None = None
    message_sha256s: Annotated[list[Hex64], Field(max_length=MAX_MESSAGES)] = []
    response_sha256: Hex64 | None = None
    response_content_sha256: Hex64 | None = None
    error_type: Text64 | None = None
    chain_seq: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    chain_prev: Hex64 | None = None
    chain_link: Hex64 | None = None
    key_reflected: bool = False

    @field_validator("ttfb_ms", "latency_ms", mode="before")
    @classmethod
    def _float(cls, value: Any) -> Any:
        # JSON has one number type: a whole number of milliseconds arrives as an int.
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:
                raise ValueError("must be a finite number") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("usage")
    @classmethod
    def _usage(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # Kept as JSON: it must encode, and fit. Anthropic's is a few hundred bytes.
        if value is None:
            return None
        try:
            encoded = json.dumps(value)
        except (ValueError, RecursionError):
            raise ValueError("must be plain JSON") from None
        if len(encoded) > MAX_USAGE_BYTES:
            return {"truncated": True}
        return value

    @field_validator("started_at")
    @classmethod
    def _timestamp(cls, value: str) -> str:
        try:
            parsed = dt.datetime.fromisoformat(value)
            if parsed.tzinfo is None:
                raise ValueError("must carry a UTC offset")
            return parsed.astimezone(dt.UTC).isoformat()
        except (ValueError, OverflowError):
            raise ValueError("must be an ISO 8601 timestamp with a UTC offset") from None


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    record_id: str | None
    reason: str  # "invalid" | "wrong_session" | "fenced"
    detail: str

    def as_json(self) -> dict[str, str | None]:
        return {"record_id": self.record_id, "reason": self.reason, "detail": self.detail}


@dataclasses.dataclass(frozen=True, slots=True)
class Sorted:
    accepted: list[UsageRecord]
    refused: list[Refusal]


def _record_id(item: object) -> str | None:
    value = item.get("record_id") if isinstance(item, dict) else None
    return value if isinstance(value, str) and len(value) <= 64 else None


def first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "record"
    return f"{where}: {error['msg']}"


def sort_records(
    items: list[object],
    *,
    session_id: str,
    tenant_id: str,
    admit: Callable[[dt.datetime], bool] | None = None,
) -> Sorted:
    """Accept or refuse each record on its own. Pure: no I/O. `admit` says whether a call
    started at that time may still be recorded (a fenced proxy's late records)."""
    accepted: list[UsageRecord] = []
    refused: list[Refusal] = []
    for item in items:
        try:
            valid = RecordIn.model_validate(item)
        except ValidationError as exc:
            refused.append(Refusal(_record_id(item), "invalid", first_error(exc)))
            continue
        if valid.session_id != session_id or valid.tenant_id != tenant_id:
            refused.append(
                Refusal(valid.record_id, "wrong_session", "the record names another session")
            )
            continue
        if admit is not None and not admit(dt.datetime.fromisoformat(valid.started_at)):
            refused.append(
                Refusal(valid.record_id, "fenced", "the call started after this proxy's fence")
            )
            continue
        accepted.append(UsageRecord(**valid.model_dump()))
    return Sorted(accepted, refused)


async def enqueue(redis: Redis, names: RedisNames, records: list[UsageRecord]) -> None:
    """Put accepted records on the ingest stream, in one round trip."""
    if not records:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for record in records:
            pipe.xadd(names.usage_stream, record.to_fields())  # type: ignore[arg-type]
        await pipe.execute()
