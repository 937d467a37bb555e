"""The aws-kms KEK provider against moto's KMS server over real HTTP."""

from __future__ import annotations

import dataclasses
import os

import pytest

from core.crypto.envelope import KeyContext, UnwrapError, unwrap_secret, wrap_secret
from core.crypto.kek import KekRing, LocalKek, load_kek
from core.crypto.kms import AwsKmsKek
from core.crypto.provider import KekError
from core.settings import KekProviderName, Settings
from tests.conftest import CLOSED_UPSTREAM
from tests.factories import fake_anthropic_key

CONTEXT = KeyContext(tenant_id="tenant-1", key_id="key-1")


async def test_a_key_wrapped_under_kms_unwraps_only_in_its_context(
    kms_server: str, kms_key: str
) -> None:
    kek = AwsKmsKek(kms_key, endpoint_url=kms_server)
    secret = fake_anthropic_key().encode()
    wrapped = await wrap_secret(kek, secret, CONTEXT)
    assert wrapped.kek_id.startswith("aws-kms:arn:aws:kms:")  # the key's ARN, not the alias
    assert secret not in wrapped.encrypted_data_key + wrapped.ciphertext
    assert await unwrap_secret(kek, wrapped, CONTEXT) == bytearray(secret)
    assert await kek.is_current(wrapped.kek_id)

    # KMS itself refuses the data key for another tenant's or key's context.
    for other in (
        dataclasses.replace(CONTEXT, tenant_id="tenant-2"),
        dataclasses.replace(CONTEXT, key_id="key-2"),
    ):
        with pytest.raises(UnwrapError, match="KMS refused decrypt: InvalidCiphertextException"):
            await unwrap_secret(kek, wrapped, other)


async def test_kms_unavailable_is_a_clear_error(kms_key: str) -> None:
    kek = AwsKmsKek(kms_key, endpoint_url=CLOSED_UPSTREAM)
    with pytest.raises(KekError, match="KMS unavailable"):
        await wrap_secret(kek, b"secret", CONTEXT)


async def test_the_settings_build_a_ring_that_still_reads_the_local_kek(
    kms_server: str, kms_key: str, settings: Settings
) -> None:
    local = os.urandom(32)
    old_blob = await wrap_secret(LocalKek(local), b"old secret", CONTEXT)
    kms_settings = dataclasses.replace(
        settings,
        kek_provider=KekProviderName.AWS_KMS,
        kms_key_id=kms_key,
        kms_endpoint_url=kms_server,
        key_encryption_key=local,
    )
    ring = load_kek(kms_settings)
    assert isinstance(ring, KekRing)
    assert await unwrap_secret(ring, old_blob, CONTEXT) == bytearray(b"old secret")
    new_blob = await wrap_secret(ring, b"new secret", CONTEXT)
    assert new_blob.kek_id.startswith("aws-kms:")
    with pytest.raises(UnwrapError):
        await unwrap_secret(LocalKek(local), new_blob, CONTEXT)
