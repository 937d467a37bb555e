"""Sealing personal data in audit rows, so it can be erased from rows that never change
(crypto-shredding). Pure functions; control/audit/store.py keeps the keys.

Each data subject (a candidate, a member, a tenant, an operator) has a random 256-bit key
in `subject_keys`. The personal fields of an audit row (the actor's IP address and user
agent; names and identity-provider ids in details) are stored only as AES-256-GCM
ciphertext under their subject's key, with associated data naming the row's chain, its
place in it and the part sealed, so a sealed value cannot be moved to another row. Erasing
the subject deletes the key: the ciphertext stays, unreadable, and the row and its hash are
unchanged. The keys guard erasure, not confidentiality: they sit in the same database.

Rows written before 0.3 sealed a candidate's IP and user agent under a key on the
candidate's row, with a fixed associated data (`seal`, `unseal`); they are still read.
"""

from __future__ import annotations

import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ERASED = "[erased]"  # what a reader sees once the subject's key is gone
SEALED = "[sealed]"  # the placeholder details keep for a sealed personal field
_AAD = b"metrux-audit-candidate-v1"
_NONCE_BYTES = 12


def row_aad(chain: str, chain_seq: int, part: str) -> bytes:
    return f"metrux-audit-v2|{chain}|{chain_seq}|{part}".encode()


def seal_fields(key: bytes, fields: dict[str, str], aad: bytes) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    plain = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    return nonce + AESGCM(key).encrypt(nonce, plain, aad)


def open_fields(key: bytes | None, sealed: bytes, aad: bytes) -> dict[str, str] | None:
    """The sealed fields, or None once the key is gone (or the bytes were moved)."""
    if key is None:
        return None
    try:
        plain = AESGCM(key).decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], aad)
    except InvalidTag:
        return None
    opened = json.loads(plain)
    return opened if isinstance(opened, dict) else None


def seal(key: bytes, value: str) -> bytes:
    """Rows before 0.3: one value under the candidate's key, fixed associated data."""
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, value.encode("utf-8"), _AAD)


def unseal(key: bytes | None, sealed: bytes | None) -> str | None:
    """A value sealed before 0.3, or None once the key is gone (the candidate was deleted)."""
    if key is None or sealed is None:
        return None
    try:
        return AESGCM(key).decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], _AAD).decode()
    except InvalidTag:
        return None
