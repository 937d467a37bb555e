"""The seam every KEK provider plugs into (core/crypto/kek.py: local and the ring;
core/crypto/kms.py: aws-kms), and what crosses it. A leaf: it imports no provider.

Data keys are handed around as `bytearray`s so they can be zeroed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Protocol


class KekError(Exception):
    """The KEK provider refused or failed; the message never holds key material."""


@dataclasses.dataclass(slots=True)
class DataKey:
    plaintext: bytearray
    encrypted: bytes
    kek_id: str

    def wipe(self) -> None:
        self.plaintext[:] = bytes(len(self.plaintext))

    def __repr__(self) -> str:
        return f"<DataKey kek={self.kek_id}>"


class KekProvider(Protocol):
    @property
    def kek_id(self) -> str:
        """Identifier of the KEK new data keys are wrapped under (stored with each blob)."""
        ...

    def owns(self, kek_id: str) -> bool:
        """Whether blobs with this kek_id are this provider's to unwrap."""
        ...

    async def is_current(self, kek_id: str) -> bool:
        """Whether a blob is wrapped under the KEK this provider wraps new keys under."""
        ...

    async def generate_data_key(self, context: Mapping[str, str]) -> DataKey: ...

    async def encrypt_data_key(self, plaintext: bytearray, context: Mapping[str, str]) -> bytes:
        """Wrap an existing data key (re-wrapping under a new KEK)."""
        ...

    async def decrypt_data_key(
        self, encrypted: bytes, context: Mapping[str, str], kek_id: str
    ) -> bytearray: ...
