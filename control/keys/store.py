"""Queries on api_keys. Rows come back as KeyRecord (never with the blob) or WrappedKey."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from control.db.due import Due
from control.db.schema import api_keys, sessions, tenants, usage_records
from control.keys.health import Health, KeyStatus
from core.crypto.envelope import WrappedKey
from core.signals import LIVE_STATES


class DuplicateKey(Exception):
    """The tenant already holds a live copy of this key."""


class DefaultTaken(Exception):
    """A concurrent transaction made another key the tenant's default first."""


def _conflict(exc: IntegrityError, fingerprint: str) -> Exception:
    # Both dialects name the index or its columns in the message.
    if "fingerprint" in str(exc.orig):
        return DuplicateKey(fingerprint)
    if "default" in str(exc.orig) or "tenant_id" in str(exc.orig):
        return DefaultTaken()
    return exc


@dataclasses.dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    tenant_id: str
    name: str | None
    last_four: str
    fingerprint: str
    created_at: dt.datetime
    created_by: str | None
    revoked_at: dt.datetime | None
    status: KeyStatus
    status_reason: str | None
    last_checked_at: dt.datetime | None
    is_default: bool


_PUBLIC_COLUMNS = (
    api_keys.c.id,
    api_keys.c.tenant_id,
    api_keys.c.name,
    api_keys.c.last_four,
    api_keys.c.fingerprint,
    api_keys.c.created_at,
    api_keys.c.created_by,
    api_keys.c.revoked_at,
    api_keys.c.status,
    api_keys.c.status_reason,
    api_keys.c.last_checked_at,
    api_keys.c.is_default,
)


def _record(row: Any) -> KeyRecord:
    values = {column.name: getattr(row, column.name) for column in _PUBLIC_COLUMNS}
    values["status"] = KeyStatus(values["status"])
    values["is_default"] = bool(values["is_default"])
    return KeyRecord(**values)


async def insert_key(
    conn: AsyncConnection,
    *,
    key_id: str,
    tenant_id: str,
    name: str | None,
    wrapped: WrappedKey,
    last_four: str,
    fingerprint: str,
    created_by: str | None,
    health: Health,
    is_default: bool,
    now: dt.datetime,
) -> KeyRecord:
    try:
        row = (
            await conn.execute(
                insert(api_keys)
                .values(
                    id=key_id,
                    tenant_id=tenant_id,
                    name=name,
                    kek_id=wrapped.kek_id,
                    encrypted_data_key=wrapped.encrypted_data_key,
                    nonce=wrapped.nonce,
                    ciphertext=wrapped.ciphertext,
                    format_version=wrapped.version,
                    last_four=last_four,
                    fingerprint=fingerprint,
                    created_at=now,
                    created_by=created_by,
                    status=health.status.value,
                    status_reason=health.reason,
                    last_checked_at=now,
                    next_check_at=health.next_check_at,
                    check_attempts=health.attempts,
                    is_default=is_default,
                )
                .returning(*_PUBLIC_COLUMNS)
            )
        ).one()
    except IntegrityError as exc:
        raise _conflict(exc, fingerprint) from exc
    return _record(row)


async def find_live_by_fingerprint(
    conn: AsyncConnection, tenant_id: str, fingerprint: str
) -> KeyRecord | None:
    row = (
        await conn.execute(
            select(*_PUBLIC_COLUMNS).where(
                api_keys.c.tenant_id == tenant_id,
                api_keys.c.fingerprint == fingerprint,
                api_keys.c.revoked_at.is_(None),
            )
        )
    ).first()
    return _record(row) if row else None


async def list_keys(conn: AsyncConnection, tenant_id: str) -> list[KeyRecord]:
    rows = await conn.execute(
        select(*_PUBLIC_COLUMNS)
        .where(api_keys.c.tenant_id == tenant_id)
        .order_by(api_keys.c.created_at.desc(), api_keys.c.id)
    )
    return [_record(row) for row in rows]


async def get_key(conn: AsyncConnection, tenant_id: str, key_id: str) -> KeyRecord | None:
    """The tenant's key with this id; None if absent or another tenant's."""
    row = (
        await conn.execute(
            select(*_PUBLIC_COLUMNS).where(
                api_keys.c.id == key_id, api_keys.c.tenant_id == tenant_id
            )
        )
    ).first()
    return _record(row) if row else None


async def revoke_key(
    conn: AsyncConnection, tenant_id: str, key_id: str, *, revoked_by: str | None, now: dt.datetime
) -> KeyRecord | None:
    """Mark a live key revoked and destroy its wrapped blob; None if it was not live."""
    row = (
        await conn.execute(
            update(api_keys)
            .where(
                api_keys.c.id == key_id,
                api_keys.c.tenant_id == tenant_id,
                api_keys.c.revoked_at.is_(None),
            )
            .values(**_revoked(now, revoked_by))
            .returning(*_PUBLIC_COLUMNS)
        )
    ).first()
    return _record(row) if row else None


def _revoked(now: dt.datetime, revoked_by: str | None) -> dict[str, Any]:
    """What revoking a key sets: it is marked revoked and its wrapped blob destroyed."""
    return {
        "revoked_at": now,
        "revoked_by": revoked_by,
        "status": KeyStatus.REVOKED.value,
        "status_reason": None,
        "next_check_at": None,
        "is_default": False,
        "kek_id": None,
        "encrypted_data_key": None,
        "nonce": None,
        "ciphertext": None,
    }


def _of_closed_tenant() -> ColumnElement[bool]:
    closed = select(tenants.c.id).where(tenants.c.closed_at.is_not(None))
    return api_keys.c.tenant_id.in_(closed) & api_keys.c.revoked_at.is_(None)


def due_closed_tenant_keys() -> Due:
    """Live keys of closed tenants (closing revokes them; this catches any that remain)."""
    return Due(select(api_keys.c.id).where(_of_closed_tenant()))


async def revoke_closed_tenant_keys(
    conn: AsyncConnection, ids: list[str], *, revoked_by: str, now: dt.datetime
) -> list[KeyRecord]:
    """Revoke those still live in a closed tenant, exactly as `revoke_key` does."""
    rows = await conn.execute(
        update(api_keys)
        .where(api_keys.c.id.in_(ids), _of_closed_tenant())
        .values(**_revoked(now, revoked_by))
        .returning(*_PUBLIC_COLUMNS)
    )
    return [_record(row) for row in rows]


async def live_key_ids(conn: AsyncConnection, tenant_id: str) -> list[str]:
    rows = await conn.execute(
        select(api_keys.c.id).where(
            api_keys.c.tenant_id == tenant_id, api_keys.c.revoked_at.is_(None)
        )
    )
    return [row.id for row in rows]


async def get_wrapped(conn: AsyncConnection, tenant_id: str, key_id: str) -> WrappedKey | None:
    """The wrapped blob of a live key, for the attach path; None if revoked or absent."""
    row = (
        await conn.execute(
            select(
                api_keys.c.kek_id,
                api_keys.c.encrypted_data_key,
                api_keys.c.nonce,
                api_keys.c.ciphertext,
                api_keys.c.format_version,
            ).where(
                api_keys.c.id == key_id,
                api_keys.c.tenant_id == tenant_id,
                api_keys.c.revoked_at.is_(None),
            )
        )
    ).first()
    if row is None:
        return None
    return WrappedKey(
        kek_id=row.kek_id,
        encrypted_data_key=row.encrypted_data_key,
        nonce=row.nonce,
        ciphertext=row.ciphertext,
        version=row.format_version,
    )


async def get_default(conn: AsyncConnection, tenant_id: str) -> KeyRecord | None:
    row = (
        await conn.execute(
            select(*_PUBLIC_COLUMNS).where(
                api_keys.c.tenant_id == tenant_id,
                api_keys.c.is_default.is_(True),
                api_keys.c.revoked_at.is_(None),
            )
        )
    ).first()
    return _record(row) if row else None


async def clear_default(conn: AsyncConnection, tenant_id: str) -> None:
    await conn.execute(
        update(api_keys)
        .where(api_keys.c.tenant_id == tenant_id, api_keys.c.is_default.is_(True))
        .values(is_default=False)
    )


async def set_default(conn: AsyncConnection, tenant_id: str, key_id: str) -> KeyRecord:
    """Mark this key the default; the caller cleared the previous one in its transaction."""
    try:
        row = (
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.tenant_id == tenant_id)
                .values(is_default=True)
                .returning(*_PUBLIC_COLUMNS)
            )
        ).one()
    except IntegrityError as exc:
        raise DefaultTaken() from exc
    return _record(row)


async def due_for_check(conn: AsyncConnection, now: dt.datetime, limit: int) -> list[KeyRecord]:
    rows = await conn.execute(
        select(*_PUBLIC_COLUMNS, api_keys.c.next_check_at)
        .where(api_keys.c.revoked_at.is_(None), api_keys.c.next_check_at <= now)
        .order_by(api_keys.c.next_check_at, api_keys.c.id)
        .limit(limit)
    )
    return [_record(row) for row in rows]


async def claim_check(
    conn: AsyncConnection, key_id: str, *, due_by: dt.datetime, lease_until: dt.datetime
) -> int | None:
    """Claim a due check for this worker by pushing the key's next check to the end of a
    lease; of two workers racing, exactly one sees its update apply. Returns the key's
    unanswered-attempt count, or None when another worker has it (or it is no longer due)."""
    row = (
        await conn.execute(
            update(api_keys)
            .where(
                api_keys.c.id == key_id,
                api_keys.c.revoked_at.is_(None),
                api_keys.c.next_check_at <= due_by,
            )
            .values(next_check_at=lease_until)
            .returning(api_keys.c.check_attempts)
        )
    ).first()
    return None if row is None else int(row.check_attempts)


async def save_health(
    conn: AsyncConnection, key_id: str, health: Health, *, now: dt.datetime
) -> KeyRecord | None:
    """Store a check's outcome on a live key; None if it was revoked meanwhile."""
    row = (
        await conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(
                status=health.status.value,
                status_reason=health.reason,
                check_attempts=health.attempts,
                next_check_at=health.next_check_at,
                last_checked_at=now,
            )
            .returning(*_PUBLIC_COLUMNS)
        )
    ).first()
    return _record(row) if row else None


async def mark_invalid(
    conn: AsyncConnection, key_id: str, reason: str, *, now: dt.datetime
) -> KeyRecord | None:
    """Flip a live key that is not yet invalid to invalid; None if nothing changed, so of
    many reports of the same refusal exactly one acts on it."""
    row = (
        await conn.execute(
            update(api_keys)
            .where(
                api_keys.c.id == key_id,
                api_keys.c.revoked_at.is_(None),
                api_keys.c.status != KeyStatus.INVALID.value,
            )
            .values(
                status=KeyStatus.INVALID.value,
                status_reason=reason,
                check_attempts=0,
                next_check_at=None,
                last_checked_at=now,
            )
            .returning(*_PUBLIC_COLUMNS)
        )
    ).first()
    return _record(row) if row else None


async def request_check(conn: AsyncConnection, key_id: str, *, now: dt.datetime) -> None:
    """Make a live key due for a check now."""
    await conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(next_check_at=now)
    )


async def keys_of_sessions(conn: AsyncConnection, session_ids: set[str]) -> dict[str, KeyRecord]:
    """The key each of these sessions attached with, by session id."""
    rows = await conn.execute(
        select(sessions.c.id.label("session_id"), *_PUBLIC_COLUMNS)
        .join(api_keys, api_keys.c.id == sessions.c.api_key_id)
        .where(sessions.c.id.in_(session_ids))
    )
    return {row.session_id: _record(row) for row in rows}


async def usage_by_key(conn: AsyncConnection, tenant_id: str) -> dict[str, KeyUsage]:
    """Per key of the tenant: its live sessions and the time of its last proxied call."""
    live = (
        select(sessions.c.api_key_id, func.count().label("n"))
        .where(sessions.c.tenant_id == tenant_id, sessions.c.state.in_(LIVE_STATES))
        .group_by(sessions.c.api_key_id)
    )
    last = (
        select(sessions.c.api_key_id, func.max(usage_records.c.started_at).label("at"))
        .join(usage_records, usage_records.c.session_id == sessions.c.id)
        .where(sessions.c.tenant_id == tenant_id)
        .group_by(sessions.c.api_key_id)
    )
    result: dict[str, KeyUsage] = {}
    for row in await conn.execute(live):
        result[row.api_key_id] = KeyUsage(live_sessions=row.n)
    for row in await conn.execute(last):
        previous = result.get(row.api_key_id, KeyUsage())
        result[row.api_key_id] = dataclasses.replace(previous, last_used_at=row.at)
    return result


@dataclasses.dataclass(frozen=True, slots=True)
class KeyUsage:
    live_sessions: int = 0
    last_used_at: dt.datetime | None = None


async def count_by_status(conn: AsyncConnection) -> dict[str, int]:
    """Keys per status, every tenant (for the metrics gauge)."""
    rows = await conn.execute(select(api_keys.c.status, func.count()).group_by(api_keys.c.status))
    return {str(status): int(count) for status, count in rows.all()}


@dataclasses.dataclass(frozen=True, slots=True)
class WrappedDataKey:
    """A live key's data key as stored: what `metrux control rewrap` moves between KEKs."""

    id: str
    tenant_id: str
    kek_id: str
    encrypted_data_key: bytes
    format_version: int


async def live_data_keys(conn: AsyncConnection, *, after: str, limit: int) -> list[WrappedDataKey]:
    """Live keys' wrapped data keys in id order, from after the id `after`."""
    rows = await conn.execute(
        select(
            api_keys.c.id,
            api_keys.c.tenant_id,
            api_keys.c.kek_id,
            api_keys.c.encrypted_data_key,
            api_keys.c.format_version,
        )
        .where(api_keys.c.revoked_at.is_(None), api_keys.c.id > after)
        .order_by(api_keys.c.id)
        .limit(limit)
    )
    return [
        WrappedDataKey(
            row.id, row.tenant_id, row.kek_id, bytes(row.encrypted_data_key), row.format_version
        )
        for row in rows
    ]


async def replace_data_key(
    conn: AsyncConnection, old: WrappedDataKey, *, kek_id: str, encrypted_data_key: bytes
) -> bool:
    """Swap in the re-wrapped data key; False if the row changed since `old` was read."""
    moved = await conn.execute(
        update(api_keys)
        .where(
            api_keys.c.id == old.id,
            api_keys.c.kek_id == old.kek_id,
            api_keys.c.encrypted_data_key == old.encrypted_data_key,
        )
        .values(kek_id=kek_id, encrypted_data_key=encrypted_data_key)
    )
    return moved.rowcount == 1


async def live_fingerprints(conn: AsyncConnection) -> list[tuple[str, str, str, str]]:
    """(fingerprint, id, tenant id, last four) of every live key."""
    rows = await conn.execute(
        select(
            api_keys.c.fingerprint, api_keys.c.id, api_keys.c.tenant_id, api_keys.c.last_four
        ).where(api_keys.c.revoked_at.is_(None))
    )
    return [(row.fingerprint, row.id, row.tenant_id, row.last_four) for row in rows]
