"""Sealing a data key to one proxy process (HPKE): it opens only there, and only for the
session, tenant and key it was sealed for."""

from __future__ import annotations

import base64
import os
import pickle

import pytest

from core.crypto.sealing import (
    Recipient,
    SealError,
    SealSuite,
    SealTarget,
    load_target,
    seal,
    seal_info,
)

INFO = seal_info(session_id="s-1", tenant_id="t-1", key_id="k-1")


def target_of(recipient: Recipient) -> SealTarget:
    """What the control plane makes of the public key a proxy sends with its attach."""
    sent = recipient.as_json()
    return load_target(sent["suite"], sent["public_key"])


def test_a_sealed_key_opens_with_its_recipient_only() -> None:
    recipient = Recipient()
    assert recipient.suite is SealSuite.HYBRID  # the post-quantum suite where available
    data_key = bytearray(os.urandom(32))
    sealed = seal(data_key, target_of(recipient), INFO)
    assert recipient.open(sealed, INFO) == data_key
    with pytest.raises(SealError):
        Recipient().open(sealed, INFO)


@pytest.mark.parametrize(
    "other",
    [
        {"session_id": "s-2", "tenant_id": "t-1", "key_id": "k-1"},
        {"session_id": "s-1", "tenant_id": "t-2", "key_id": "k-1"},
        {"session_id": "s-1", "tenant_id": "t-1", "key_id": "k-2"},
    ],
)
def test_a_seal_is_bound_to_its_session_tenant_and_key(other: dict[str, str]) -> None:
    recipient = Recipient()
    sealed = seal(bytearray(32), target_of(recipient), INFO)
    with pytest.raises(SealError):
        recipient.open(sealed, seal_info(**other))


def test_the_x25519_suite_works_where_ml_kem_is_missing() -> None:
    from cryptography.hazmat.primitives.asymmetric import x25519
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    private = x25519.X25519PrivateKey.generate()
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    target = load_target(SealSuite.X25519.value, base64.b64encode(raw).decode())
    sealed = seal(bytearray(b"k" * 32), target, INFO)
    assert len(sealed) == 32 + 32 + 16  # encapsulated key, data key, tag


@pytest.mark.parametrize(
    ("suite", "public_key"),
    [
        ("rsa-oaep", base64.b64encode(b"x" * 32).decode()),
        (SealSuite.X25519.value, "not base64"),
        (SealSuite.X25519.value, base64.b64encode(b"x" * 31).decode()),
        (SealSuite.HYBRID.value, base64.b64encode(b"x" * 32).decode()),
    ],
)
def test_anything_but_a_public_key_of_its_suite_is_refused(suite: str, public_key: str) -> None:
    with pytest.raises(SealError):
        load_target(suite, public_key)


def test_the_recipient_never_shows_its_private_key() -> None:
    recipient = Recipient()
    assert repr(recipient) == f"<Recipient {recipient.suite.value}>"
    with pytest.raises(TypeError):
        pickle.dumps(recipient)
