"""The proxy's side of opening its key: a `python -m proxy.unseal` child (see there).

`KeyOpener` starts the child, hands its HPKE public key to the attach, passes the grant's
sealed key back to it and reads the API key from its stdout straight into a locked page of
this process (`os.readv` into the page: no bytes object ever holds it). The proxy process
itself loads no cryptography library.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from typing import Any, Protocol

from proxy.keyring import SessionKey
from proxy.secret_memory import LockedBuffer

MAX_KEY_BYTES = 4096
START_TIMEOUT_S = 30.0


class OpenError(Exception):
    """The child could not open the key; the message says why (never key material)."""


class Opener(Protocol):
    def public_key(self) -> dict[str, str]: ...
    def open(self, grant: dict[str, Any]) -> SessionKey: ...
    def __enter__(self) -> Opener: ...
    def __exit__(self, *exc: object) -> None: ...


class InProcessOpener:
    """Opens the key in this process, for a proxy embedded in a program that loads
    cryptography anyway (the test suite's in-process stack). `metrux proxy run` never
    uses it."""

    def __init__(self) -> None:
        from core.crypto.sealing import Recipient

        self._recipient = Recipient()

    def public_key(self) -> dict[str, str]:
        return self._recipient.as_json()

    def open(self, grant: dict[str, Any]) -> SessionKey:
        from proxy import unseal

        try:
            memory, secret = unseal.open_grant(grant, self._recipient)
        except unseal.Unopenable as exc:
            raise OpenError(str(exc)) from None
        key = SessionKey()
        key.arm(secret, memory)
        return key

    def __enter__(self) -> InProcessOpener:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class KeyOpener:
    """The key-opening child of `metrux proxy run`."""

    def __init__(self) -> None:
        self._child = subprocess.Popen(
            [sys.executable, "-m", "proxy.unseal"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH", "LANG")},
        )
        self._public: dict[str, str] | None = None

    def public_key(self) -> dict[str, str]:
        """The child's HPKE public key, as the attach body carries it."""
        if self._public is None:
            assert self._child.stdout is not None
            line = self._child.stdout.readline()
            if not line:
                raise OpenError(self._failure("did not start"))
            self._public = json.loads(line)
        return self._public

    def open(self, grant: dict[str, Any]) -> SessionKey:
        """Send the grant's sealed key to the child and arm a SessionKey with the result."""
        child = self._child
        assert child.stdin is not None
        assert child.stdout is not None
        request = {
            "sealed_key": grant["sealed_key"],
            "session_id": grant["session_id"],
            "tenant_id": grant["tenant_id"],
            "key_id": grant["key_id"],
        }
        try:
            child.stdin.write(json.dumps(request).encode() + b"\n")
            child.stdin.close()
        except OSError:
            raise OpenError(self._failure("stopped")) from None
        fd = child.stdout.fileno()
        prefix = _read_exactly(fd, 4)
        if len(prefix) != 4:
            raise OpenError(self._failure("sent no key"))
        (size,) = struct.unpack(">I", prefix)
        if not 0 < size <= MAX_KEY_BYTES:
            raise OpenError("the key-opening child sent a key of an impossible size")
        memory = LockedBuffer(size)
        view = memory.view()
        try:
            filled = 0
            while filled < size:
                count = os.readv(fd, [view[filled:]])
                if count == 0:
                    raise OpenError(self._failure("sent part of a key"))
                filled += count
        except BaseException:
            view.release()
            memory.close()
            raise
        key = SessionKey()
        key.arm(view, memory)
        self.close()
        return key

    def _failure(self, what: str) -> str:
        try:
            self._child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._child.kill()
        assert self._child.stderr is not None
        said = self._child.stderr.read().decode(errors="replace").strip().splitlines()
        return f"the key-opening child {what}" + (f": {said[-1]}" if said else "")

    def close(self) -> None:
        child = self._child
        for stream in (child.stdin, child.stdout, child.stderr):
            if stream is not None and not stream.closed:
                stream.close()
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    def __enter__(self) -> KeyOpener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_exactly(fd: int, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = os.read(fd, count - len(data))
        if not chunk:
            break
        data += chunk
    return data
