"""Attach: trade the bootstrap token for the session's grant, and unwrap the key into memory.

The grant also carries this proxy's own credential for its link to the control plane
(records and signals); it never leaves the process.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import aiohttp

from core.crypto.envelope import (
    KeyContext,
    UnwrapError,
    WrappedKey,
    plaintext_size,
    unwrap_secret,
)
from core.crypto.kek import KekError, KekProvider
from proxy.keyring import SessionKey
from proxy.secret_memory import LockedBuffer
from proxy.session import SessionInfo


class AttachError(Exception):
    """The control plane refused the attach, or could not be reached."""


@dataclasses.dataclass(frozen=True, slots=True)
class Grant:
    """What an attach gave this proxy, less the key (which is in its SessionKey)."""

    info: SessionInfo
    credential: str = dataclasses.field(repr=False)  # mxp_…: records and signals


async def fetch_grant(control_url: str, session_id: str, bootstrap_token: str) -> dict[str, Any]:
    url = f"{control_url.rstrip('/')}/internal/v1/sessions/{session_id}/attach"
    timeout = aiohttp.ClientTimeout(total=30)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout, trust_env=False) as client,
            client.post(url, headers={"Authorization": f"Bearer {bootstrap_token}"}) as response,
        ):
            body = await response.json(content_type=None)
            if response.status != 200:
                error = (body or {}).get("error", {}) if isinstance(body, dict) else {}
                raise AttachError(
                    f"attach refused ({response.status}): {error.get('message', 'no message')}"
                )
            return body  # type: ignore[no-any-return]
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise AttachError(
            f"control plane unreachable at {control_url} ({type(exc).__name__})"
        ) from None


async def arm_key(grant: dict[str, Any], kek: KekProvider) -> tuple[Grant, SessionKey]:
    """Unwrap the granted blob through the KEK provider into an armed SessionKey."""
    info = SessionInfo.from_grant(grant)
    blob = grant["wrapped_key"]
    wrapped = WrappedKey(
        kek_id=blob["kek_id"],
        encrypted_data_key=base64.b64decode(blob["encrypted_data_key"]),
        nonce=base64.b64decode(blob["nonce"]),
        ciphertext=base64.b64decode(blob["ciphertext"]),
        version=blob["version"],
    )
    context = KeyContext(tenant_id=info.tenant_id, key_id=info.key_id, version=wrapped.version)
    memory = LockedBuffer(plaintext_size(wrapped))
    try:
        secret = await unwrap_secret(kek, wrapped, context, into=memory.view())
    except BaseException:
        memory.close()
        raise
    key = SessionKey()
    key.arm(secret, memory)
    return Grant(info, str(grant["proxy_token"])), key


async def report_unwrap_failure(
    control_url: str, session_id: str, bootstrap_token: str, reason: str
) -> bool:
    """Tell the control plane this attach could not unwrap (it audits the failure and
    re-arms the token for a retry); False if it could not be told."""
    url = f"{control_url.rstrip('/')}/internal/v1/sessions/{session_id}/attach/failed"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15), trust_env=False) as c,
            c.post(
                url,
                json={"reason": reason},
                headers={"Authorization": f"Bearer {bootstrap_token}"},
            ) as response,
        ):
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def attach(
    control_url: str, session_id: str, bootstrap_token: str, kek: KekProvider
) -> tuple[Grant, SessionKey]:
    """Attach and arm the key. If the key does not unwrap, the control plane is told (it
    audits the failure and re-arms the bootstrap token) and AttachError says whether a
    retry can work."""
    grant = await fetch_grant(control_url, session_id, bootstrap_token)
    try:
        return await arm_key(grant, kek)
    except (KekError, UnwrapError) as exc:
        unavailable = "unavailable" in str(exc)
        rearmed = await report_unwrap_failure(
            control_url,
            session_id,
            bootstrap_token,
            "kek_unavailable" if unavailable else "unwrap_failed",
        )
        status = "503: the key-encryption service is unavailable" if unavailable else "error"
        retry = "; the bootstrap token is re-armed, retry" if rearmed else ""
        raise AttachError(f"could not unwrap the session's key ({status}: {exc}){retry}") from None
