"""Envelope encryption of customer keys: AES-256-GCM under a per-secret data key.

Each secret gets a fresh 256-bit data key (DEK) from the KEK provider and a 96-bit random nonce;
the DEK encrypts exactly one message, so the GCM nonce budget never comes into play. The
associated data binds the blob to its owner (tenant id, key id, purpose, format version): a
blob copied to another tenant's or key's row fails to decrypt. The plaintext DEK and the
unwrapped secret live only in `bytearray`s that are zeroed as soon as they are done with.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.crypto.blob import (
    FORMAT_VERSION,
    NONCE_BYTES,
    PURPOSE,
    TAG_BYTES,
    KeyContext,
    UnwrapError,
    WrappedKey,
    decrypt_secret,
    plaintext_size,
)
from core.crypto.provider import DataKey, KekError, KekProvider

__all__ = [
    "FORMAT_VERSION",
    "NONCE_BYTES",
    "PURPOSE",
    "TAG_BYTES",
    "KeyContext",
    "UnwrapError",
    "WrappedKey",
    "decrypt_secret",
    "encrypt_with",
    "plaintext_size",
    "unwrap_data_key",
    "unwrap_secret",
    "wrap_secret",
]


def encrypt_with(data_key: DataKey, secret: bytes | bytearray, context: KeyContext) -> WrappedKey:
    """Encrypt `secret` under `data_key` (fresh from the KEK provider), bound to `context`;
    the caller wipes the data key."""
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(data_key.plaintext).encrypt(nonce, secret, context.aad())
    return WrappedKey(
        kek_id=data_key.kek_id,
        encrypted_data_key=data_key.encrypted,
        nonce=nonce,
        ciphertext=ciphertext,
        version=context.version,
    )


async def wrap_secret(
    kek: KekProvider, secret: bytes | bytearray, context: KeyContext
) -> WrappedKey:
    """Encrypt `secret` under a fresh data key bound to `context`."""
    data_key = await kek.generate_data_key(context.as_dict())
    try:
        return encrypt_with(data_key, secret, context)
    finally:
        data_key.wipe()


async def unwrap_data_key(kek: KekProvider, wrapped: WrappedKey, context: KeyContext) -> bytearray:
    """The blob's plaintext data key, through the KEK provider; the caller zeroes it. The
    control plane does this at attach and seals the result to the proxy (core/crypto/sealing.py)."""
    if wrapped.version != context.version:
        raise UnwrapError(f"format version {wrapped.version} does not match the context")
    if len(wrapped.nonce) != NONCE_BYTES or len(wrapped.ciphertext) < TAG_BYTES:
        raise UnwrapError("malformed blob")
    try:
        return await kek.decrypt_data_key(
            wrapped.encrypted_data_key, context.as_dict(), wrapped.kek_id
        )
    except KekError as exc:
        raise UnwrapError(f"data key did not decrypt: {exc}") from exc


async def unwrap_secret(
    kek: KekProvider,
    wrapped: WrappedKey,
    context: KeyContext,
    into: memoryview | None = None,
) -> bytearray | memoryview:
    """Decrypt a wrapped secret through the KEK provider (see decrypt_secret)."""
    data_key = await unwrap_data_key(kek, wrapped, context)
    return decrypt_secret(data_key, wrapped, context, into)
