"""Attach: trade the bootstrap token for the session's grant, and open the key into memory.

The proxy makes an ephemeral HPKE key pair and sends the public half with its attach. The
control plane seals the key's data key to it (core/crypto/sealing.py). The proxy opens the
data key, decrypts the API key straight into its locked page and zeroes the data key: it
never talks to KMS and holds no key-encryption setting. The grant also carries this
proxy's own credential for its link to the control plane (records and signals); it never
leaves the process.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
from typing import Any

import structlog

from core.crypto.blob import KeyContext, UnwrapError, WrappedKey, decrypt_secret, plaintext_size
from core.crypto.sealing import Recipient, SealError, seal_info
from proxy.http.response import ResponseCut
from proxy.keyring import SessionKey
from proxy.secret_memory import LockedBuffer
from proxy.session import SessionInfo
from proxy.transport import HttpClient, UpstreamError

log = structlog.get_logger(__name__)
# The control plane answers 503 while its key-encryption service is down, and leaves the
# token unspent: the proxy retries for this long before it gives up.
UNAVAILABLE_RETRY_S = 60.0
ATTACH_TIMEOUT_S = 30.0


class AttachError(Exception):
    """The control plane refused the attach, or could not be reached."""


class Unavailable(AttachError):
    """The control plane could not unwrap the key just now; the token is still good."""


@dataclasses.dataclass(frozen=True, slots=True)
class Grant:
    """What an attach gave this proxy, less the key (which is in its SessionKey)."""

    info: SessionInfo
    credential: str = dataclasses.field(repr=False)  # mxp_…: records and signals


async def fetch_grant(
    control_url: str, session_id: str, bootstrap_token: str, recipient: Recipient
) -> dict[str, Any]:
    http = HttpClient(control_url)
    try:
        async with asyncio.timeout(ATTACH_TIMEOUT_S):
            response = await http.request(
                "POST",
                f"/internal/v1/sessions/{session_id}/attach",
                headers={
                    "Authorization": f"Bearer {bootstrap_token}",
                    "Content-Type": "application/json",
                },
                body=json.dumps(recipient.as_json()).encode(),
                read_timeout=ATTACH_TIMEOUT_S,
            )
            async with response:
                body = await response.json()
    except (UpstreamError, ResponseCut, TimeoutError, ValueError, OSError) as exc:
        raise AttachError(
            f"control plane unreachable at {control_url} ({type(exc).__name__})"
        ) from None
    finally:
        await http.close()
    if response.status != 200:
        error = (body or {}).get("error", {}) if isinstance(body, dict) else {}
        kind = Unavailable if response.status == 503 else AttachError
        raise kind(f"attach refused ({response.status}): {error.get('message', 'no message')}")
    return body  # type: ignore[no-any-return]


def arm_key(grant: dict[str, Any], recipient: Recipient) -> tuple[Grant, SessionKey]:
    """Open the sealed data key and decrypt the API key into a locked page."""
    info = SessionInfo.from_grant(grant)
    sealed = grant["sealed_key"]
    wrapped = WrappedKey(
        kek_id="",  # the control plane unwrapped the data key; no KEK is involved here
        encrypted_data_key=b"",
        nonce=base64.b64decode(sealed["nonce"]),
        ciphertext=base64.b64decode(sealed["ciphertext"]),
        version=sealed["version"],
    )
    context = KeyContext(tenant_id=info.tenant_id, key_id=info.key_id, version=wrapped.version)
    bound_to = seal_info(session_id=info.session_id, tenant_id=info.tenant_id, key_id=info.key_id)
    try:
        data_key = recipient.open(base64.b64decode(sealed["sealed_data_key"]), bound_to)
    except SealError as exc:
        raise AttachError(f"the granted key does not open: {exc}") from None
    memory = LockedBuffer(plaintext_size(wrapped))
    try:
        secret = decrypt_secret(data_key, wrapped, context, into=memory.view())
    except UnwrapError as exc:
        memory.close()
        raise AttachError(f"the granted key does not decrypt: {exc}") from None
    except BaseException:
        memory.close()
        raise
    key = SessionKey()
    key.arm(secret, memory)
    return Grant(info, str(grant["proxy_token"])), key


async def attach(
    control_url: str,
    session_id: str,
    bootstrap_token: str,
    *,
    retry_for: float = UNAVAILABLE_RETRY_S,
) -> tuple[Grant, SessionKey]:
    """Attach and arm the key; while the control plane's key-encryption service is
    unavailable (503, token unspent), retry with backoff for up to `retry_for` seconds."""
    recipient = Recipient()
    give_up = time.monotonic() + retry_for
    delay = 0.5
    while True:
        try:
            grant = await fetch_grant(control_url, session_id, bootstrap_token, recipient)
        except Unavailable:
            if time.monotonic() + delay > give_up:
                raise
            log.warning("attach_unavailable_retrying", delay_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
            continue
        return arm_key(grant, recipient)
