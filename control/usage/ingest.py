"""The usage ingester: a Redis consumer group that writes proxy records to the database.

At-least-once delivery from the stream, made exactly-once in the table by the record id.
An `on_stored` hook sees each stored batch (the key monitor looks for refused keys).
An entry is acknowledged only after its transaction commits; entries a dead consumer left
pending are claimed after a minute.

No record can stop the stream. Each entry is checked again on its own (with the rules the
intake applies, control/usage/intake.py). One the database refuses anyway sends its batch
down one record at a time, and each record that is still refused goes to the dead-letter
table with the reason (`metrux control usage dead-letters`, and a metric); the rest are
stored. Only an outage (the database or Redis unreachable) makes a batch wait and retry.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from control.usage import store
from control.usage.intake import RecordIn, first_error
from control.usage.store import DeadLetter
from core.backoff import Backoff
from core.redis_names import RedisNames
from core.usage import STREAM_FIELD, UsageRecord

log = structlog.get_logger(__name__)
CLAIM_IDLE_MS = 60_000
# The database or Redis is unreachable: the batch waits, it is not the records' fault.
OUTAGES = (RedisError, OSError, OperationalError, InterfaceError, DisconnectionError)
Entry = tuple[bytes, Any]


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def decode(entry_id: bytes, fields: Any) -> UsageRecord | DeadLetter:
    """A stream entry as a record, or as a dead letter saying what is wrong with it."""
    raw = fields.get(STREAM_FIELD.encode(), fields.get(STREAM_FIELD))
    payload = (
        _text(raw)
        if raw is not None
        else json.dumps({_text(k): _text(v) for k, v in fields.items()})
    )
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise TypeError("the record is not a JSON object")
        data.pop("v", None)
        return UsageRecord(**RecordIn.model_validate(data).model_dump())
    except ValidationError as exc:
        return _dead(entry_id, f"invalid: {first_error(exc)}", payload, data)
    except (TypeError, ValueError, RecursionError) as exc:
        return _dead(entry_id, f"unreadable: {type(exc).__name__}", payload, None)


def _dead(entry_id: bytes, reason: str, payload: str, data: Any) -> DeadLetter:
    def field(name: str) -> str | None:
        value = data.get(name) if isinstance(data, dict) else None
        return value if isinstance(value, str) else None

    return DeadLetter(
        stream_entry_id=_text(entry_id),
        reason=reason,
        payload=payload,
        record_id=field("record_id"),
        session_id=field("session_id"),
        tenant_id=field("tenant_id"),
    )


def _letter(entry_id: bytes, record: UsageRecord, reason: str) -> DeadLetter:
    return DeadLetter(
        stream_entry_id=_text(entry_id),
        reason=reason,
        payload=record.to_json().decode(),
        record_id=record.record_id,
        session_id=record.session_id,
        tenant_id=record.tenant_id,
    )


class UsageIngester:
    def __init__(
        self,
        redis: Redis,
        engine: AsyncEngine,
        names: RedisNames,
        *,
        consumer: str | None = None,
        batch: int = 200,
        block_ms: int = 1000,
        on_stored: Callable[[list[UsageRecord]], Awaitable[None]] | None = None,
        on_dead: Callable[[list[DeadLetter]], None] | None = None,
    ) -> None:
        self._redis = redis
        self._engine = engine
        self._names = names
        self._consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self._batch = batch
        self._block_ms = block_ms
        self._on_stored = on_stored
        self._on_dead = on_dead

    async def ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(
                self._names.usage_stream, self._names.usage_group, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self) -> None:
        """Ingest until cancelled; Redis or database outages are waited out."""
        backoff = Backoff(0.5, 10.0)
        while True:
            try:
                await self.ensure_group()
                await self._claim_abandoned()
                while True:
                    await self.ingest_once(block_ms=self._block_ms)
                    backoff.reset()
            except OUTAGES as exc:
                log.warning(
                    "usage_ingest_retrying", error=type(exc).__name__, delay_s=backoff.delay
                )
                await backoff.sleep()

    async def ingest_once(self, *, block_ms: int | None = None) -> int:
        """Read one batch (this consumer's own pending entries first) and store it."""
        pending = await self._read("0")
        entries = pending or await self._read(">", block_ms)
        return await self._store(entries)

    async def _read(self, start: str, block_ms: int | None = None) -> list[tuple[bytes, Any]]:
        # redis-py types the reply loosely: [[stream, [(id, fields), …]]], or None.
        response: Any = await self._redis.xreadgroup(
            self._names.usage_group,
            self._consumer,
            {self._names.usage_stream: start},
            count=self._batch,
            block=block_ms,
        )
        return [entry for _, entries in response or [] for entry in entries if entry[1]]

    async def _claim_abandoned(self) -> None:
        await self._redis.xautoclaim(
            self._names.usage_stream,
            self._names.usage_group,
            self._consumer,
            min_idle_time=CLAIM_IDLE_MS,
            count=self._batch,
        )

    async def _store(self, entries: list[Entry]) -> int:
        if not entries:
            return 0
        now = dt.datetime.now(dt.UTC)
        decoded = [(entry_id, decode(entry_id, fields)) for entry_id, fields in entries]
        dead = [item for _, item in decoded if isinstance(item, DeadLetter)]
        good = [(entry_id, item) for entry_id, item in decoded if isinstance(item, UsageRecord)]
        try:
            async with self._engine.begin() as conn:
                written, unknown = await store.insert_records(conn, [r for _, r in good], now=now)
            stored = [r for _, r in good if r not in unknown]
        except OUTAGES:
            raise
        except Exception as exc:
            # The database refused something in the batch: find what, one record at a time.
            log.warning("usage_batch_refused", error=type(exc).__name__, records=len(good))
            stored, unknown, refused = await self._store_one_by_one(good, now)
            written = len(stored)
            dead += refused
        dead += [_letter(entry_id, r, "unknown_session") for entry_id, r in good if r in unknown]
        if dead:
            await self._bury(dead, now)
        if self._on_stored is not None:
            # Before the acknowledgement: if this fails, the batch is read again, its
            # records are skipped as already stored and the hook runs again.
            await self._on_stored(stored)
        ids = [entry_id for entry_id, _ in entries]
        await self._redis.xack(self._names.usage_stream, self._names.usage_group, *ids)
        # Stored (or dead-lettered) and acknowledged: the stream need not keep them.
        await self._redis.xdel(self._names.usage_stream, *ids)
        return written

    async def _store_one_by_one(
        self, good: list[tuple[bytes, UsageRecord]], now: dt.datetime
    ) -> tuple[list[UsageRecord], list[UsageRecord], list[DeadLetter]]:
        stored: list[UsageRecord] = []
        unknown: list[UsageRecord] = []
        refused: list[DeadLetter] = []
        for entry_id, record in good:
            try:
                async with self._engine.begin() as conn:
                    _, missing = await store.insert_records(conn, [record], now=now)
            except OUTAGES:
                raise
            except Exception as exc:
                refused.append(_letter(entry_id, record, f"refused_by_database: {_reason(exc)}"))
                continue
            (unknown if missing else stored).append(record)
        return stored, unknown, refused

    async def _bury(self, dead: list[DeadLetter], now: dt.datetime) -> None:
        try:
            async with self._engine.begin() as conn:
                await store.insert_dead_letters(conn, dead, now=now)
        except OUTAGES:
            raise
        except Exception:
            # Even the letters would not store: keep what cannot fail (the reasons, and the
            # entry ids), so the stream moves on either way.
            log.exception("usage_dead_letters_unstorable", count=len(dead))
            bare = [DeadLetter(d.stream_entry_id, d.reason[:100], "(unstorable)") for d in dead]
            async with self._engine.begin() as conn:
                await store.insert_dead_letters(conn, bare, now=now)
        log.error(
            "usage_records_dead_lettered",
            count=len(dead),
            reasons=sorted({letter.reason.split(":")[0] for letter in dead}),
        )
        if self._on_dead is not None:
            self._on_dead(dead)


def _reason(exc: Exception) -> str:
    """The database's complaint, first line: never a record's value in full."""
    original = getattr(exc, "orig", None) or exc
    return (
        f"{type(original).__name__}: {str(original).splitlines()[0][:300] if str(original) else ''}"
    )
