"""Attach: trade the bootstrap token for the session's grant, and open the key into memory.

An ephemeral HPKE key pair is made for the attach, and the public half goes with it. The
control plane seals the key's data key to it (core/crypto/sealing.py). The data key is
opened, the API key decrypted into a locked page and the data key zeroed; by default in a
short-lived child (proxy/unseal.py, proxy/key_opener.py), so the proxy process loads no
cryptography library. The proxy never talks to KMS and holds no key-encryption setting.
The grant also carries this proxy's own credential for its link to the control plane
(records and signals); it never leaves the process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import Any

import structlog

from core.backoff import Backoff
from proxy.http.response import ResponseCut
from proxy.key_opener import KeyOpener, Opener, OpenError
from proxy.keyring import SessionKey
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
    control_url: str, session_id: str, bootstrap_token: str, public_key: dict[str, str]
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
                body=json.dumps(public_key).encode(),
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


async def attach(
    control_url: str,
    session_id: str,
    bootstrap_token: str,
    *,
    retry_for: float = UNAVAILABLE_RETRY_S,
    opener: Opener | None = None,
) -> tuple[Grant, SessionKey]:
    """Attach and arm the key; while the control plane's key-encryption service is
    unavailable (503, token unspent), retry with backoff for up to `retry_for` seconds.
    `opener` opens the sealed key (default: a child process, started now)."""
    with opener or KeyOpener() as keys:
        public_key = keys.public_key()
        give_up = time.monotonic() + retry_for
        backoff = Backoff(0.5, 10.0)
        while True:
            try:
                grant = await fetch_grant(control_url, session_id, bootstrap_token, public_key)
            except Unavailable:
                if time.monotonic() + backoff.delay > give_up:
                    raise
                log.warning("attach_unavailable_retrying", delay_s=backoff.delay)
                await backoff.sleep()
                continue
            info = SessionInfo.from_grant(grant)
            try:
                key = keys.open(grant)
            except OpenError as exc:
                raise AttachError(str(exc)) from None
            return Grant(info, str(grant["proxy_token"])), key
