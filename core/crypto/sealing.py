"""Sealing a data key to one proxy process: HPKE (RFC 9180), hybrid post-quantum.

At start a proxy makes an ephemeral key pair (`Recipient`) that never leaves its memory and
sends the public half with its attach. The control plane unwraps the customer key's data
key through its KEK provider and seals it to that public key (`seal`); the HPKE `info`
binds the seal to the session, tenant and key, so a sealed key replayed into another
session's grant does not open. The proxy opens it (`Recipient.open`), decrypts the API key
into its locked page and zeroes the data key. Only that process can open what was sealed
to it, and it never talks to KMS.

The suite is ML-KEM-768 + X25519 (the hybrid KEM), HKDF-SHA256 and AES-256-GCM. Where the
OpenSSL under `cryptography` has no ML-KEM, X25519 alone is used; the suite travels with
the public key, and the control plane accepts only these two.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from core.wipe import wipe_bytes

_MLKEM768_PUBLIC = 1184
_X25519_PUBLIC = 32


class SealSuite(StrEnum):
    HYBRID = "mlkem768x25519-hkdfsha256-aes256gcm"
    X25519 = "x25519-hkdfsha256-aes256gcm"


_SUITES = {
    SealSuite.HYBRID: hpke.Suite(
        hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM
    ),
    SealSuite.X25519: hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM),
}


class SealError(Exception):
    """A public key that is not one, or a sealed key that does not open under its info."""


def seal_info(*, session_id: str, tenant_id: str, key_id: str) -> bytes:
    """The HPKE info: canonical JSON of what the sealed key is for."""
    fields = {"key_id": key_id, "purpose": "metrux-attach-v1", "session_id": session_id,
              "tenant_id": tenant_id}  # fmt: skip
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def _raw(key: x25519.X25519PublicKey | mlkem.MLKEM768PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


class Recipient:
    """An ephemeral key pair whose private half never leaves this object."""

    __slots__ = ("_private", "public_key", "suite")

    def __init__(self) -> None:
        x_private = x25519.X25519PrivateKey.generate()
        try:
            m_private = mlkem.MLKEM768PrivateKey.generate()
        except UnsupportedAlgorithm:
            self.suite = SealSuite.X25519
            self._private: object = x_private
            self.public_key = _raw(x_private.public_key())
        else:
            self.suite = SealSuite.HYBRID
            self._private = hpke.MLKEM768X25519PrivateKey(m_private, x_private)
            self.public_key = _raw(m_private.public_key()) + _raw(x_private.public_key())

    def __repr__(self) -> str:
        return f"<Recipient {self.suite.value}>"

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("Recipient cannot be pickled")

    def as_json(self) -> dict[str, str]:
        return {"suite": self.suite.value, "public_key": base64.b64encode(self.public_key).decode()}

    def open(self, sealed: bytes, info: bytes) -> bytearray:
        """The sealed data key, in a bytearray the caller zeroes; the library's own copy is
        wiped here."""
        try:
            plain = _SUITES[self.suite].decrypt(sealed, self._private, info=info)  # type: ignore[arg-type]
        except (InvalidTag, ValueError) as exc:
            raise SealError(f"the sealed key does not open ({type(exc).__name__})") from None
        out = bytearray(plain)
        wipe_bytes(plain)
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class SealTarget:
    """A proxy's public key, checked: what `seal` encrypts to."""

    suite: SealSuite
    public_key: object


def load_target(suite: str, public_key_b64: str) -> SealTarget:
    """Parse what a proxy sent with its attach; SealError if it is not a key of its suite."""
    try:
        chosen = SealSuite(suite)
        raw = base64.b64decode(public_key_b64, validate=True)
    except (ValueError, TypeError):
        raise SealError("unknown suite or public key encoding") from None
    expected = _MLKEM768_PUBLIC + _X25519_PUBLIC if chosen is SealSuite.HYBRID else _X25519_PUBLIC
    if len(raw) != expected:
        raise SealError("the public key has the wrong length for its suite")
    try:
        if chosen is SealSuite.HYBRID:
            public: object = hpke.MLKEM768X25519PublicKey(
                mlkem.MLKEM768PublicKey.from_public_bytes(raw[:_MLKEM768_PUBLIC]),
                x25519.X25519PublicKey.from_public_bytes(raw[_MLKEM768_PUBLIC:]),
            )
        else:
            public = x25519.X25519PublicKey.from_public_bytes(raw)
    except (ValueError, UnsupportedAlgorithm):
        raise SealError("the public key is not valid for its suite") from None
    return SealTarget(chosen, public)


def seal(data_key: bytearray, target: SealTarget, info: bytes) -> bytes:
    """Seal `data_key` to the proxy's public key, bound to `info`."""
    return _SUITES[target.suite].encrypt(data_key, target.public_key, info=info)  # type: ignore[arg-type]
