"""Envelope encryption: round trip, binding to tenant and key id, tamper detection."""

from __future__ import annotations

import dataclasses
import os

import pytest

from core.crypto.envelope import KeyContext, UnwrapError, WrappedKey, unwrap_secret, wrap_secret
from core.crypto.kek import LocalKek
from tests.factories import fake_anthropic_key

CONTEXT = KeyContext(tenant_id="tenant-a", key_id="key-1")


@pytest.fixture
def kek() -> LocalKek:
    return LocalKek(os.urandom(32))


async def test_round_trip_returns_the_identical_secret(kek: LocalKek) -> None:
    secret = fake_anthropic_key().encode()
    wrapped = await wrap_secret(kek, secret, CONTEXT)
    plaintext = await unwrap_secret(kek, wrapped, CONTEXT)
    assert isinstance(plaintext, bytearray)
    assert bytes(plaintext) == secret


async def test_blob_holds_no_plaintext(kek: LocalKek) -> None:
    """No field of the stored blob contains the secret or a long piece of it."""
    secret = fake_anthropic_key().encode()
    wrapped = await wrap_secret(kek, secret, CONTEXT)
    stored = wrapped.encrypted_data_key + wrapped.nonce + wrapped.ciphertext
    assert secret[-16:] not in stored
    assert secret.decode() not in repr(wrapped)


async def test_every_wrap_uses_a_fresh_data_key_and_nonce(kek: LocalKek) -> None:
    secret = fake_anthropic_key().encode()
    blobs = [await wrap_secret(kek, secret, CONTEXT) for _ in range(200)]
    assert len({b.nonce for b in blobs}) == 200
    assert len({b.encrypted_data_key for b in blobs}) == 200
    assert all(len(b.nonce) == 12 for b in blobs)


@pytest.mark.parametrize(
    "moved",
    [
        KeyContext(tenant_id="tenant-b", key_id="key-1"),
        KeyContext(tenant_id="tenant-a", key_id="key-2"),
        KeyContext(tenant_id="tenant-a", key_id="key-1", purpose="other"),
    ],
    ids=["other_tenant", "other_key", "other_purpose"],
)
async def test_blob_moved_to_another_owner_does_not_decrypt(
    kek: LocalKek, moved: KeyContext
) -> None:
    wrapped = await wrap_secret(kek, fake_anthropic_key().encode(), CONTEXT)
    with pytest.raises(UnwrapError):
        await unwrap_secret(kek, wrapped, moved)


async def test_version_mismatch_is_refused(kek: LocalKek) -> None:
    wrapped = await wrap_secret(kek, fake_anthropic_key().encode(), CONTEXT)
    with pytest.raises(UnwrapError):
        await unwrap_secret(kek, wrapped, dataclasses.replace(CONTEXT, version=2))


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


@pytest.mark.parametrize("field", ["ciphertext", "nonce", "encrypted_data_key"])
async def test_any_flipped_bit_fails_to_decrypt(kek: LocalKek, field: str) -> None:
    """Flipping one bit anywhere in any field of the blob is detected, at every position."""
    wrapped = await wrap_secret(kek, fake_anthropic_key().encode(), CONTEXT)
    original = getattr(wrapped, field)
    for index in range(len(original)):
        tampered = dataclasses.replace(wrapped, **{field: _flip(original, index)})
        with pytest.raises(UnwrapError):
            await unwrap_secret(kek, tampered, CONTEXT)


async def test_truncated_blob_is_refused(kek: LocalKek) -> None:
    wrapped = await wrap_secret(kek, fake_anthropic_key().encode(), CONTEXT)
    with pytest.raises(UnwrapError):
        await unwrap_secret(
            kek, dataclasses.replace(wrapped, ciphertext=wrapped.ciphertext[:10]), CONTEXT
        )


async def test_another_kek_cannot_unwrap(kek: LocalKek) -> None:
    wrapped = await wrap_secret(kek, fake_anthropic_key().encode(), CONTEXT)
    with pytest.raises(UnwrapError):
        await unwrap_secret(LocalKek(os.urandom(32)), wrapped, CONTEXT)


async def test_forged_kek_id_cannot_unwrap(kek: LocalKek) -> None:
    """A blob claiming another KEK's id is refused, not tried."""
    wrapped = await wrap_secret(kek, fake_anthropic_key().encode(), CONTEXT)
    other = LocalKek(os.urandom(32))
    with pytest.raises(UnwrapError):
        await unwrap_secret(other, dataclasses.replace(wrapped, kek_id=other.kek_id), CONTEXT)


def test_context_bytes_are_canonical_and_injective() -> None:
    """Equal contexts give equal bytes; values with quotes and commas cannot collide."""
    a = KeyContext(tenant_id="a", key_id='b","tenant_id":"c')
    b = KeyContext(tenant_id='a","key_id":"b', key_id="c")
    assert KeyContext("t", "k").aad() == KeyContext("t", "k").aad()
    assert a.aad() != b.aad()


def test_wrapped_key_repr_has_no_material() -> None:
    wrapped = WrappedKey(
        kek_id="local:x",
        encrypted_data_key=b"\x01" * 60,
        nonce=b"\x02" * 12,
        ciphertext=b"\x03" * 40,
    )
    assert repr(wrapped) == "<WrappedKey v1 kek=local:x 40B>"
