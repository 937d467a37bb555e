"""A wrapped secret's stored form and its decryption with a plaintext data key.

No key-encryption key is involved here: the proxy opens a data key sealed to it
(core/crypto/sealing.py) and decrypts with this alone. Wrapping and unwrapping through a KEK
provider are in core/crypto/envelope.py.
"""

from __future__ import annotations

import dataclasses
import json

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

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


def plaintext_size(wrapped: WrappedKey) -> int:
    return len(wrapped.ciphertext) - TAG_BYTES


def decrypt_secret(
    data_key: bytearray,
    wrapped: WrappedKey,
    context: KeyContext,
    into: memoryview | None = None,
) -> bytearray | memoryview:
    """Decrypt the blob's ciphertext with its plaintext data key into `into` (exactly
    `plaintext_size` writable bytes, such as a locked page) or a new `bytearray`. The data
    key is zeroed here, whatever happens; the caller zeroes the result when done."""
    try:
        if wrapped.version != context.version:
            raise UnwrapError(f"format version {wrapped.version} does not match the context")
        if len(wrapped.nonce) != NONCE_BYTES or len(wrapped.ciphertext) < TAG_BYTES:
            raise UnwrapError("malformed blob")
        plaintext: bytearray | memoryview = (
            bytearray(plaintext_size(wrapped)) if into is None else into
        )
        if len(plaintext) != plaintext_size(wrapped):
            raise UnwrapError("output buffer does not fit the secret")
        try:
            AESGCM(data_key).decrypt_into(
                wrapped.nonce, wrapped.ciphertext, context.aad(), plaintext
            )
        except InvalidTag:
            plaintext[:] = bytes(len(plaintext))
            raise UnwrapError("ciphertext does not authenticate under this context") from None
        return plaintext
    finally:
        data_key[:] = bytes(len(data_key))
