"""Key-encryption-key providers: they wrap and unwrap the per-secret data keys.

`KekProvider` (core/crypto/provider.py) is the seam. `local` (a 32-byte key from
KEY_ENCRYPTION_KEY or a generated 0600 file, for development and single-machine installs)
lives here, with the ring that reads what earlier KEKs wrapped; `aws-kms` (GenerateDataKey
and Decrypt with an EncryptionContext equal to the associated data) plugs into the same
interface (core/crypto/kms.py). Data keys are handed around as `bytearray`s so they can be
zeroed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.crypto.kms import AwsKmsKek
from core.crypto.provider import DataKey, KekError, KekProvider
from core.settings import KekProviderName, Settings

log = structlog.get_logger(__name__)

DATA_KEY_BYTES = 32
KEK_FILE_NAME = "kek.key"


def _canonical(context: Mapping[str, str]) -> bytes:
    return json.dumps(dict(context), sort_keys=True, separators=(",", ":")).encode()


class LocalKek:
    """A KEK held in process memory; data keys are AES-256-GCM-wrapped under it."""

    __slots__ = ("_aead", "_kek_id")

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("a local KEK is 32 bytes")
        self._aead = AESGCM(key)
        # A stable, non-secret name for this KEK, so blobs record which KEK wrapped them.
        self._kek_id = "local:" + hashlib.sha256(b"metrux-kek-id\0" + key).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"<LocalKek {self._kek_id}>"

    @property
    def kek_id(self) -> str:
        return self._kek_id

    def owns(self, kek_id: str) -> bool:
        return kek_id == self._kek_id

    async def is_current(self, kek_id: str) -> bool:
        return kek_id == self._kek_id

    async def generate_data_key(self, context: Mapping[str, str]) -> DataKey:
        plaintext = bytearray(os.urandom(DATA_KEY_BYTES))
        return DataKey(
            plaintext=plaintext,
            encrypted=await self.encrypt_data_key(plaintext, context),
            kek_id=self._kek_id,
        )

    async def encrypt_data_key(self, plaintext: bytearray, context: Mapping[str, str]) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext, _canonical(context))

    async def decrypt_data_key(
        self, encrypted: bytes, context: Mapping[str, str], kek_id: str
    ) -> bytearray:
        if kek_id != self._kek_id:
            raise KekError(f"blob was wrapped under {kek_id}, this provider holds {self._kek_id}")
        if len(encrypted) != 12 + DATA_KEY_BYTES + 16:
            raise KekError("malformed encrypted data key")
        plaintext = bytearray(DATA_KEY_BYTES)
        try:
            self._aead.decrypt_into(encrypted[:12], encrypted[12:], _canonical(context), plaintext)
        except InvalidTag:
            raise KekError("encrypted data key does not authenticate under this context") from None
        return plaintext


def load_local_kek_bytes(settings: Settings) -> bytes:
    """KEY_ENCRYPTION_KEY if set; else the data directory's key file, created 0600 if absent."""
    if settings.key_encryption_key is not None:
        return settings.key_encryption_key
    path = settings.data_dir / KEK_FILE_NAME
    key = _read_or_create_key_file(path)
    log.warning(
        "local_kek_file_in_use",
        path=str(path),
        advice="development only; in production set KEY_ENCRYPTION_KEY or use aws-kms",
    )
    return key


def _read_or_create_key_file(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # Write a complete key under a private name, then link it into place: link() fails if
        # another process got there first, so every process ends up reading the same key.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(os.urandom(32))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise KekError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
    key = path.read_bytes()
    if len(key) != 32:
        raise KekError(f"{path} does not hold a 32-byte key")
    return key


class KekRing:
    """New keys are wrapped under `primary`; a blob is unwrapped by whichever provider
    wrapped it. During a KEK rotation (`metrux control rewrap`) the services hold both
    the old and the new KEK, so every key stays readable while blobs move over."""

    __slots__ = ("_others", "primary")

    def __init__(self, primary: KekProvider, others: tuple[KekProvider, ...] = ()) -> None:
        self.primary = primary
        self._others = others

    def __repr__(self) -> str:
        return f"<KekRing {self.primary!r} + {len(self._others)} readable>"

    @property
    def kek_id(self) -> str:
        return self.primary.kek_id

    def owns(self, kek_id: str) -> bool:
        return any(p.owns(kek_id) for p in (self.primary, *self._others))

    async def is_current(self, kek_id: str) -> bool:
        return await self.primary.is_current(kek_id)

    async def generate_data_key(self, context: Mapping[str, str]) -> DataKey:
        return await self.primary.generate_data_key(context)

    async def encrypt_data_key(self, plaintext: bytearray, context: Mapping[str, str]) -> bytes:
        return await self.primary.encrypt_data_key(plaintext, context)

    async def decrypt_data_key(
        self, encrypted: bytes, context: Mapping[str, str], kek_id: str
    ) -> bytearray:
        for provider in (self.primary, *self._others):
            if provider.owns(kek_id):
                return await provider.decrypt_data_key(encrypted, context, kek_id)
        raise KekError(f"no configured KEK can unwrap blobs wrapped under {kek_id}")


def provider_for(settings: Settings, name: KekProviderName) -> KekProvider:
    if name is KekProviderName.AWS_KMS:
        if settings.kms_key_id is None:
            raise KekError("METRUX_KMS_KEY_ID is required for aws-kms")
        return AwsKmsKek(
            settings.kms_key_id,
            region=settings.kms_region,
            endpoint_url=settings.kms_endpoint_url,
        )
    return LocalKek(load_local_kek_bytes(settings))


def load_kek(settings: Settings) -> KekProvider:
    """The KEK provider the settings name, able to read what the previous KEKs wrapped:
    a local KEK (KEY_ENCRYPTION_KEY) next to aws-kms, and KEY_ENCRYPTION_KEY_PREVIOUS."""
    primary = provider_for(settings, settings.kek_provider)
    readable: list[KekProvider] = []
    if settings.kek_provider is KekProviderName.AWS_KMS and settings.key_encryption_key:
        readable.append(LocalKek(settings.key_encryption_key))
    if settings.previous_key_encryption_key is not None:
        readable.append(LocalKek(settings.previous_key_encryption_key))
    return KekRing(primary, tuple(readable)) if readable else primary
