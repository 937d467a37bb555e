"""Queries on api_keys. Rows come back as KeyRecord (never with the blob) or WrappedKey."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from control.db.schema import api_keys
from core.crypto.envelope import WrappedKey


class DuplicateKey(Exception):
    """The tenant already holds a live copy of this key."""


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


_PUBLIC_COLUMNS = (
    api_keys.c.id,
    api_keys.c.tenant_id,
    api_keys.c.name,
    api_keys.c.last_four,
    api_keys.c.fingerprint,
    api_keys.c.created_at,
    api_keys.c.created_by,
    api_keys.c.revoked_at,
)


def _record(row: Any) -> KeyRecord:
    return KeyRecord(**{column.name: getattr(row, column.name) for column in _PUBLIC_COLUMNS})


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
                )
                .returning(*_PUBLIC_COLUMNS)
            )
        ).one()
    except IntegrityError as exc:
        raise DuplicateKey(fingerprint) from exc
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
            .values(
                revoked_at=now,
                revoked_by=revoked_by,
                kek_id=None,
                encrypted_data_key=None,
                nonce=None,
                ciphertext=None,
            )
            .returning(*_PUBLIC_COLUMNS)
        )
    ).first()
    return _record(row) if row else None


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
