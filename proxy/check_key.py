"""A key check in a short-lived process: `python -m proxy.check_key`.

The control plane never hands a customer key to a client library of its own: to ask
Anthropic whether a key works, it starts this process, which attaches the way a proxy does,
over its stdin and stdout instead of HTTP:

1. it makes an ephemeral HPKE key pair and prints the public half (one JSON line);
2. it reads one grant (one JSON line): the data key sealed to that public key, bound to the
   check, the tenant and the key, the AES-GCM ciphertext and the upstream URL;
3. it opens the key into a locked page, asks `GET /v1/models?limit=1` with it, prints the
   verdict (one JSON line: accepted, rejected or unreachable, and why), zeroes the key and
   exits. The grant is single use by construction: the pipe carries exactly one.

Only the verdict and Anthropic's error kind leave the process; never the key, and never a
response body.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import structlog

from core.crypto.blob import KeyContext, WrappedKey
from core.crypto.sealing import Recipient, seal_info
from core.hardening import disable_core_dumps
from proxy.http.response import ResponseCut
from proxy.keyring import SessionKey
from proxy.transport import HttpClient, UpstreamError
from proxy.unseal import Unopenable, open_into_page

TIMEOUT_S = 5.0  # unless the grant says otherwise (METRUX_KEY_CHECK_TIMEOUT_S)
ANTHROPIC_VERSION = "2023-06-01"


def check_info(check_id: str, tenant_id: str, key_id: str) -> bytes:
    """The HPKE info of a check's grant: a check is no session, and cannot pass for one."""
    return seal_info(session_id=f"key-check:{check_id}", tenant_id=tenant_id, key_id=key_id)


def verdict_for(status: int) -> tuple[str, str]:
    """Anthropic's answer to models.list as a verdict on the key. Pure."""
    if status == 200:
        return "accepted", "ok"
    if status == 401:
        return "rejected", "authentication_error"
    if status == 403:
        return "rejected", "permission_error"
    return "unreachable", f"http_{status}"  # 429, 5xx, 529: no verdict on the key


def open_grant(grant: dict[str, Any], recipient: Recipient) -> SessionKey:
    sealed = grant["sealed_key"]
    wrapped = WrappedKey(
        kek_id="",
        encrypted_data_key=b"",
        nonce=bytes.fromhex(sealed["nonce"]),
        ciphertext=bytes.fromhex(sealed["ciphertext"]),
        version=int(sealed["version"]),
    )
    tenant_id, key_id = str(grant["tenant_id"]), str(grant["key_id"])
    memory, secret = open_into_page(
        recipient,
        bytes.fromhex(sealed["sealed_data_key"]),
        check_info(str(grant["check_id"]), tenant_id, key_id),
        wrapped,
        KeyContext(tenant_id=tenant_id, key_id=key_id, version=wrapped.version),
    )
    key = SessionKey()
    key.arm(secret, memory)
    return key


async def ask_anthropic(
    upstream_url: str, key: SessionKey, timeout_s: float = TIMEOUT_S
) -> tuple[str, str]:
    http = HttpClient(upstream_url)
    headers = {"anthropic-version": ANTHROPIC_VERSION, "accept-encoding": "identity"}
    # The key goes into a head this process owns and zeroes once sent.
    head = http.head("GET", "/v1/models?limit=1", headers, 0, key=key)
    try:
        async with asyncio.timeout(timeout_s):
            response = await http.send(head, read_timeout=timeout_s)
            response.release()
            return verdict_for(response.status)
    except TimeoutError:
        return "unreachable", "timeout"
    except (UpstreamError, ResponseCut, OSError):
        return "unreachable", "connection_error"
    finally:
        head[:] = bytes(len(head))
        await http.close()


def _say(message: dict[str, str]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> int:
    disable_core_dumps()
    # stdout carries the protocol: any log line (an unlocked page, say) goes to stderr.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    recipient = Recipient()
    _say(recipient.as_json())
    line = sys.stdin.readline()
    try:
        grant = json.loads(line)
        key = open_grant(grant, recipient)
    except (ValueError, KeyError, TypeError, Unopenable) as exc:
        print(f"metrux key check: unusable grant ({type(exc).__name__})", file=sys.stderr)
        return 2
    try:
        timeout_s = float(grant.get("timeout_s", TIMEOUT_S))
        verdict, reason = asyncio.run(ask_anthropic(str(grant["upstream_url"]), key, timeout_s))
    finally:
        key.clear()
    _say({"verdict": verdict, "reason": reason})
    return 0


if __name__ == "__main__":
    sys.exit(main())
