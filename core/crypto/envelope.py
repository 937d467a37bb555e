"""Envelope encryption of customer keys: AES-256-GCM under a per-secret data key.

Each secret gets a fresh 256-bit data key (DEK) from the KEK provider and a 96-bit random nonce;
the DEK encrypts exactly one message, so the GCM nonce budget never comes into play. The
associated data binds the blob to its owner (tenant id, key id, purpose, format version): a
blob copied to another tenant's or key's row fails to decrypt. The plaintext DEK and the
unwrapped secret live only in `bytearray`s that are zeroed as soon as they are done with.
"""

from __future__ import annotations

import dataclasses
import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.crypto.kek import KekError, KekProvider

FORMAT_VERSION = 1
PURPOSE = "anthropic_api_key"
NONCE_BYTES = 12
TAG_BYTES = 16


class UnwrapError(Exception):
    """The blob does not decrypt under its context: tampered, moved, or wrong KEK."""


@dataclasses.dataclass(frozen=True, slots=True)
class KeyContext:
    """What a wrapped secret is bound to. Not secret: it may appear in KMS audit trails."""

    tenant_id: str
    key_id: str
    purpose: str = PURPOSE
    version: int = FORMAT_VERSION

    def as_dict(self) -> dict[str, str]:
        return {
            "key_id": self.key_id,
            "purpose": self.purpose,
            "tenant_id": self.tenant_id,
            "v": str(self.version),
        }

    def aad(self) -> bytes:
        """Canonical bytes: sorted-key compact JSON, so equal maps give equal bytes and
        different maps (quotes and commas included) give different bytes."""
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":")).encode()


@dataclasses.dataclass(frozen=True, slots=True)
class WrappedKey:
    """What is stored: no field is secret on its own."""

    kek_id: str
    encrypted_data_key: bytes
    nonce: bytes
    ciphertext: bytes  # includes the 16-byte GCM tag
    version: int = FORMAT_VERSION

    def __repr__(self) -> str:
        return f"<WrappedKey v{self.version} kek={self.kek_id} {len(self.ciphertext)}B>"


async def wrap_secret(
    kek: KekProvider, secret: bytes | bytearray, context: KeyContext
) -> WrappedKey:
    """Encrypt `secret` under a fresh data key bound to `context`."""
    data_key = await kek.generate_data_key(context.as_dict())
    try:
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = AESGCM(data_key.plaintext).encrypt(nonce, secret, context.aad())
    finally:
        data_key.wipe()
    return WrappedKey(
        kek_id=data_key.kek_id,
        encrypted_data_key=data_key.encrypted,
        nonce=nonce,
        ciphertext=ciphertext,
        version=context.version,
    )


def plaintext_size(wrapped: WrappedKey) -> int:
    return len(wrapped.ciphertext) - TAG_BYTES


async def unwrap_secret(
    kek: KekProvider,
    wrapped: WrappedKey,
    context: KeyContext,
    into: memoryview | None = None,
) -> bytearray | memoryview:
    """Decrypt a wrapped secret into `into` (exactly `plaintext_size` writable bytes, such
    as a locked page) or else a new `bytearray`; the caller zeroes it when done."""
    if wrapped.version != context.version:
        raise UnwrapError(f"format version {wrapped.version} does not match the context")
    if len(wrapped.nonce) != NONCE_BYTES or len(wrapped.ciphertext) < TAG_BYTES:
        raise UnwrapError("malformed blob")
    try:
        data_key = await kek.decrypt_data_key(
            wrapped.encrypted_data_key, context.as_dict(), wrapped.kek_id
        )
    except KekError as exc:
        raise UnwrapError(f"data key did not decrypt: {exc}") from exc
    plaintext: bytearray | memoryview = bytearray(plaintext_size(wrapped)) if into is None else into
    if len(plaintext) != plaintext_size(wrapped):
        raise UnwrapError("output buffer does not fit the secret")
    try:
        AESGCM(data_key).decrypt_into(wrapped.nonce, wrapped.ciphertext, context.aad(), plaintext)
    except InvalidTag:
        plaintext[:] = bytes(len(plaintext))
        raise UnwrapError("ciphertext does not authenticate under this context") from None
    finally:
        data_key[:] = bytes(len(data_key))
    return plaintext
