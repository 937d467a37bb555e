"""Sealing a candidate's IP address and user agent in audit rows, so they can be erased.

Audit rows never change, yet a candidate's deletion must leave no IP of theirs readable.
Each candidate has a random 256-bit erasure key; their IP and user agent are stored in audit
rows only encrypted under it (AES-256-GCM). Deleting the candidate deletes the key, and the
sealed values become noise while the rows stay intact. The key guards erasure, not
confidentiality: it sits next to the data, as a plaintext IP would.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from control.db.schema import candidates

_AAD = b"metrux-audit-candidate-v1"
_NONCE_BYTES = 12


def seal(key: bytes, value: str) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, value.encode("utf-8"), _AAD)


def unseal(key: bytes | None, sealed: bytes | None) -> str | None:
    """The sealed value, or None once the key is gone (the candidate was deleted)."""
    if key is None or sealed is None:
        return None
    try:
        return AESGCM(key).decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], _AAD).decode()
    except InvalidTag:
        return None


async def erasure_key(conn: AsyncConnection, candidate_id: str) -> bytes | None:
    """The candidate's erasure key, made on first use; None if there is no such candidate."""
    row = (
        await conn.execute(select(candidates.c.erasure_key).where(candidates.c.id == candidate_id))
    ).first()
    if row is None:
        return None
    if row.erasure_key is not None:
        return bytes(row.erasure_key)
    key = AESGCM.generate_key(bit_length=256)
    await conn.execute(
        update(candidates)
        .where(candidates.c.id == candidate_id, candidates.c.erasure_key.is_(None))
        .values(erasure_key=key)
    )
    # A concurrent first use may have won: read back the key that is stored.
    stored = (
        await conn.execute(select(candidates.c.erasure_key).where(candidates.c.id == candidate_id))
    ).scalar_one()
    return bytes(stored)


async def erasure_keys(conn: AsyncConnection, candidate_ids: set[str]) -> dict[str, bytes]:
    if not candidate_ids:
        return {}
    rows = await conn.execute(
        select(candidates.c.id, candidates.c.erasure_key).where(
            candidates.c.id.in_(candidate_ids), candidates.c.erasure_key.is_not(None)
        )
    )
    return {row.id: bytes(row.erasure_key) for row in rows}
