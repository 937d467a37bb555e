"""Sealing a candidate's IP address and user agent in audit rows, so they can be erased.
Pure functions; control/audit/store.py keeps the keys.

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
