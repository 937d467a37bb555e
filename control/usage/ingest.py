"""The usage ingester: a Redis consumer group that writes proxy records to the database.

At-least-once delivery from the stream, made exactly-once in the table by the record id.
An `on_stored` hook sees each stored batch (the key monitor looks for refused keys).
An entry is acknowledged only after its transaction commits; entries a dead consumer left
pending are claimed after a minute. Malformed entries are logged and acknowledged so they
cannot block the stream.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from control.usage import store
from core.backoff import Backoff
from core.redis_names import RedisNames
from core.usage import UsageRecord

log = structlog.get_logger(__name__)
CLAIM_IDLE_MS = 60_000


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
    ) -> None:
        self._redis = redis
        self._engine = engine
        self._names = names
        self._consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self._batch = batch
        self._block_ms = block_ms
        self._on_stored = on_stored

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
            except (RedisError, OSError, SQLAlchemyError) as exc:
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

    async def _store(self, entries: list[tuple[bytes, Any]]) -> int:
        if not entries:
            return 0
        records, bad = [], []
        for entry_id, fields in entries:
            try:
                records.append(UsageRecord.from_fields(fields))
            except (ValueError, TypeError, KeyError):
                bad.append(entry_id)
        if bad:
            log.error("usage_entries_malformed", count=len(bad))
        async with self._engine.begin() as conn:
            written, unknown = await store.insert_records(
                conn, records, now=dt.datetime.now(dt.UTC)
            )
        if unknown:
            log.warning("usage_for_unknown_sessions", count=len(unknown))
        if self._on_stored is not None:
            # Before the acknowledgement: if this fails, the batch is read again, its
            # records are skipped as already stored and the hook runs again.
            await self._on_stored(records)
        ids = [entry_id for entry_id, _ in entries]
        await self._redis.xack(self._names.usage_stream, self._names.usage_group, *ids)
        # Stored and acknowledged: the stream need not keep them.
        await self._redis.xdel(self._names.usage_stream, *ids)
        return written
