"""Writing (idempotently) and reading usage records."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from control.db.due import Due
from control.db.schema import sessions, usage_dead_letters, usage_records
from core.usage import GENERATION_ENDPOINT, UsageRecord, charged_output_tokens


def _row(record: UsageRecord, tenant_id: str, now: dt.datetime) -> dict[str, Any]:
    return {
        "record_id": record.record_id,
        "session_id": record.session_id,
        "tenant_id": tenant_id,
        "actor": record.actor,
        "method": record.method,
        "endpoint": record.endpoint,
        "started_at": dt.datetime.fromisoformat(record.started_at),
        "stream": record.stream,
        "http_status": record.http_status,
        "complete": record.complete,
        "model_requested": record.model_requested,
        "model_served": record.model_served,
        "upstream_request_id": record.upstream_request_id,
        "stop_reason": record.stop_reason,
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "cache_creation_input_tokens": record.cache_creation_input_tokens,
        "cache_read_input_tokens": record.cache_read_input_tokens,
        "reserved_output_tokens": record.reserved_output_tokens,
        "usage": record.usage,
        "ttfb_ms": record.ttfb_ms,
        "latency_ms": record.latency_ms,
        "bytes_in": record.bytes_in,
        "bytes_out": record.bytes_out,
        "request_sha256": record.request_sha256,
        "system_sha256": record.system_sha256,
        "message_sha256s": record.message_sha256s,
        "response_sha256": record.response_sha256,
        "response_content_sha256": record.response_content_sha256,
        "error_type": record.error_type,
        "ingested_at": now,
        "chain_seq": record.chain_seq,
        "chain_prev": record.chain_prev,
        "chain_link": record.chain_link,
    }


async def insert_records(
    conn: AsyncConnection, records: Sequence[UsageRecord], *, now: dt.datetime
) -> tuple[int, list[UsageRecord]]:
    """Insert records whose session exists; a record id seen before is skipped.

    The tenant comes from the session row, not from the record. Returns the number of
    records written or already present, and the records refused for an unknown session.
    """
    if not records:
        return 0, []
    session_ids = {r.session_id for r in records}
    rows = await conn.execute(
        select(sessions.c.id, sessions.c.tenant_id).where(sessions.c.id.in_(session_ids))
    )
    tenants = {row.id: row.tenant_id for row in rows}
    known = [r for r in records if r.session_id in tenants]
    unknown = [r for r in records if r.session_id not in tenants]
    if known:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(usage_records).on_conflict_do_nothing(
            index_elements=["record_id"]
        )
        await conn.execute(statement, [_row(r, tenants[r.session_id], now) for r in known])
    return len(known), unknown


async def list_records(conn: AsyncConnection, session_id: str) -> list[dict[str, Any]]:
    rows = await conn.execute(
        select(usage_records)
        .where(usage_records.c.session_id == session_id)
        .order_by(usage_records.c.started_at, usage_records.c.record_id)
    )
    return [dict(row._mapping) for row in rows]


async def records_of_tenant_since(
    conn: AsyncConnection, tenant_id: str, since: dt.datetime
) -> list[dict[str, Any]]:
    """The tenant's records of calls started since `since`, across its visible sessions."""
    rows = await conn.execute(
        select(usage_records)
        .join(sessions, sessions.c.id == usage_records.c.session_id)
        .where(
            sessions.c.tenant_id == tenant_id,
            sessions.c.soft_deleted_at.is_(None),
            usage_records.c.started_at >= since,
        )
        .order_by(usage_records.c.started_at)
    )
    return [dict(row._mapping) for row in rows]


async def records_of_visible_session(
    conn: AsyncConnection, session_id: str, tenant_id: str
) -> list[dict[str, Any]] | None:
    """A tenant's session's records, oldest first; None if the tenant has no such session
    (or retention soft-deleted it)."""
    visible = (
        await conn.execute(
            select(sessions.c.id).where(
                sessions.c.id == session_id,
                sessions.c.tenant_id == tenant_id,
                sessions.c.soft_deleted_at.is_(None),
            )
        )
    ).first()
    return None if visible is None else await list_records(conn, session_id)


async def chain_head(conn: AsyncConnection, session_id: str) -> tuple[int, str] | None:
    """The session's last stored chain link and its number, or None before any call."""
    row = (
        await conn.execute(
            select(usage_records.c.chain_seq, usage_records.c.chain_link)
            .where(usage_records.c.session_id == session_id, usage_records.c.chain_seq.is_not(None))
            .order_by(usage_records.c.chain_seq.desc())
            .limit(1)
        )
    ).first()
    return None if row is None else (int(row.chain_seq), str(row.chain_link))


async def chain_entries(conn: AsyncConnection, session_id: str) -> list[dict[str, Any]]:
    rows = await conn.execute(
        select(
            usage_records.c.chain_seq.label("seq"),
            usage_records.c.record_id,
            usage_records.c.started_at,
            usage_records.c.endpoint,
            usage_records.c.request_sha256,
            usage_records.c.response_sha256,
            usage_records.c.chain_prev.label("prev"),
            usage_records.c.chain_link.label("link"),
        )
        .where(usage_records.c.session_id == session_id, usage_records.c.chain_seq.is_not(None))
        .order_by(usage_records.c.chain_seq)
    )
    return [dict(row._mapping) for row in rows]


async def budget_spent(conn: AsyncConnection, session_id: str) -> tuple[int, int]:
    """The generation calls the session's stored records show, and the output tokens they
    count against its budget (core.usage.charged_output_tokens)."""
    rows = await conn.execute(
        select(
            usage_records.c.complete,
            usage_records.c.http_status,
            usage_records.c.output_tokens,
            usage_records.c.reserved_output_tokens,
        ).where(
            usage_records.c.session_id == session_id,
            usage_records.c.endpoint == GENERATION_ENDPOINT,
        )
    )
    calls = tokens = 0
    for row in rows:
        calls += 1
        tokens += charged_output_tokens(
            complete=row.complete,
            http_status=row.http_status,
            output_tokens=row.output_tokens,
            reserved=row.reserved_output_tokens,
        )
    return calls, tokens


MAX_DEAD_PAYLOAD = 64 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """A queued record the database would not take, and why."""

    stream_entry_id: str
    reason: str
    payload: str
    record_id: str | None = None
    session_id: str | None = None
    tenant_id: str | None = None


async def insert_dead_letters(
    conn: AsyncConnection, letters: Sequence[DeadLetter], *, now: dt.datetime
) -> None:
    def text(value: str | None, limit: int) -> str | None:
        # What the database refused may be what it cannot store: NULs, or too long.
        return None if value is None else value.replace("\x00", "\ufffd")[:limit]

    await conn.execute(
        insert(usage_dead_letters),
        [
            {
                "stream_entry_id": text(letter.stream_entry_id, 64),
                "record_id": text(letter.record_id, 64),
                "session_id": text(letter.session_id, 36),
                "tenant_id": text(letter.tenant_id, 36),
                "reason": text(letter.reason, 500),
                "payload": text(letter.payload, MAX_DEAD_PAYLOAD),
                "created_at": now,
            }
            for letter in letters
        ],
    )


async def list_dead_letters(
    conn: AsyncConnection, *, limit: int, tenant_id: str | None = None
) -> list[dict[str, Any]]:
    """The newest dead letters first (one tenant's, if named)."""
    query = select(usage_dead_letters).order_by(usage_dead_letters.c.id.desc()).limit(limit)
    if tenant_id is not None:
        query = query.where(usage_dead_letters.c.tenant_id == tenant_id)
    return [dict(row._mapping) for row in await conn.execute(query)]


def due_dead_letters(created_before: dt.datetime) -> Due:
    return Due(
        select(usage_dead_letters.c.id).where(usage_dead_letters.c.created_at <= created_before)
    )


async def delete_dead_letters(
    conn: AsyncConnection, ids: list[int], *, created_before: dt.datetime
) -> int:
    result = await conn.execute(
        delete(usage_dead_letters).where(
            usage_dead_letters.c.id.in_(ids), usage_dead_letters.c.created_at <= created_before
        )
    )
    return result.rowcount
