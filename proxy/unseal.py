"""Opening the session's key in a short-lived child: `python -m proxy.unseal`.

The proxy's own process never loads a cryptography library (about 8 MB of memory in
every proxy on a node); this child does the one piece of cryptography an attach needs,
over its stdin and stdout:

1. it makes an ephemeral HPKE key pair and prints the public half (one JSON line), which
   the proxy sends with its attach;
2. it reads the grant's sealed key and what it is for (one JSON line), opens the data key
   (the seal is bound to session, tenant and key), decrypts the API key into a locked page
   and zeroes the data key;
3. it writes the key to stdout as a 4-byte big-endian length and the key's bytes, zeroes
   its page and exits. The proxy reads them straight into its own locked page
   (proxy/key_opener.py).

Both processes are non-dumpable, and the key crosses only the pipe between them. A failure
is one line on stderr (never key material) and a non-zero exit.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import sys
from typing import Any

from core.crypto.blob import KeyContext, UnwrapError, WrappedKey, decrypt_secret, plaintext_size
from core.crypto.sealing import Recipient, SealError, seal_info
from core.hardening import disable_core_dumps
from proxy.secret_memory import LockedBuffer


class Unopenable(Exception):
    """The sealed key does not open or does not decrypt."""


def open_into_page(
    recipient: Recipient, sealed_data_key: bytes, info: bytes, wrapped: WrappedKey,
    context: KeyContext,
) -> tuple[LockedBuffer, memoryview]:  # fmt: skip
    """Open the data key and decrypt the API key into a new locked page; the data key is
    zeroed. Returns the page and a view of exactly the key."""
    try:
        data_key = recipient.open(sealed_data_key, info)
    except SealError as exc:
        raise Unopenable(f"the granted key does not open: {exc}") from None
    memory = LockedBuffer(plaintext_size(wrapped))
    try:
        secret = decrypt_secret(data_key, wrapped, context, into=memory.view())
    except UnwrapError as exc:
        memory.close()
        raise Unopenable(f"the granted key does not decrypt: {exc}") from None
    except BaseException:
        memory.close()
        raise
    return memory, secret  # type: ignore[return-value]


def open_grant(grant: dict[str, Any], recipient: Recipient) -> tuple[LockedBuffer, memoryview]:
    """Open a grant's sealed key (fields base64, as the attach answers them)."""
    sealed = grant["sealed_key"]
    tenant_id, key_id = str(grant["tenant_id"]), str(grant["key_id"])
    wrapped = WrappedKey(
        kek_id="",  # the control plane unwrapped the data key; no KEK is involved here
        encrypted_data_key=b"",
        nonce=base64.b64decode(sealed["nonce"]),
        ciphertext=base64.b64decode(sealed["ciphertext"]),
        version=int(sealed["version"]),
    )
    info = seal_info(session_id=str(grant["session_id"]), tenant_id=tenant_id, key_id=key_id)
    context = KeyContext(tenant_id=tenant_id, key_id=key_id, version=wrapped.version)
    return open_into_page(
        recipient, base64.b64decode(sealed["sealed_data_key"]), info, wrapped, context
    )


def _write_all(fd: int, data: bytes | memoryview) -> None:
    written = 0
    while written < len(data):  # from the page to the pipe: no copy in between
        written += os.write(fd, data[written:])


def main() -> int:
    # The protocol keeps the pipe the proxy reads; whatever else would print to stdout (a
    # log line about an unlocked page, say) goes to stderr instead.
    out = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    disable_core_dumps()
    recipient = Recipient()
    _write_all(out, (json.dumps(recipient.as_json()) + "\n").encode())
    line = sys.stdin.readline()
    if not line:
        return 3  # the proxy gave up before it had a grant
    try:
        memory, secret = open_grant(json.loads(line), recipient)
    except Unopenable as exc:
        print(f"metrux unseal: {exc}", file=sys.stderr)
        return 2
    except (ValueError, KeyError, TypeError) as exc:
        print(f"metrux unseal: unusable grant ({type(exc).__name__})", file=sys.stderr)
        return 2
    try:
        _write_all(out, struct.pack(">I", len(secret)))
        _write_all(out, secret)
    finally:
        secret.release()
        memory.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
