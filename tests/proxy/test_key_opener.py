"""Opening the key in a child process: the proxy process loads no cryptography library,
the key arrives in its locked page, and a grant that does not open fails with a reason."""

from __future__ import annotations

import ast
import base64
import os
import subprocess
import sys

import pytest

from core.crypto.blob import KeyContext
from core.crypto.envelope import encrypt_with
from core.crypto.provider import DataKey
from core.crypto.sealing import load_target, seal, seal_info
from proxy.key_opener import KeyOpener, OpenError
from tests.factories import fake_anthropic_key

pytestmark = pytest.mark.process  # starts the service's own processes


def _grant(public: dict[str, str], api_key: str, *, bound_session: str = "s1") -> dict[str, object]:
    """A grant as the control plane makes it: the key under a data key, the data key sealed
    to the opener's public key and bound to session, tenant and key."""
    context = KeyContext(tenant_id="t1", key_id="k1")
    data_key = bytearray(os.urandom(32))
    wrapped = encrypt_with(DataKey(bytearray(data_key), b"", "local"), api_key.encode(), context)
    info = seal_info(session_id=bound_session, tenant_id="t1", key_id="k1")
    sealed = seal(data_key, load_target(public["suite"], public["public_key"]), info)
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    return {
        "session_id": "s1",
        "tenant_id": "t1",
        "key_id": "k1",
        "sealed_key": {
            "suite": public["suite"],
            "sealed_data_key": b64(sealed),
            "nonce": b64(wrapped.nonce),
            "ciphertext": b64(wrapped.ciphertext),
            "version": wrapped.version,
        },
    }


def test_the_child_opens_the_key_into_a_locked_page_of_this_process() -> None:
    api_key = fake_anthropic_key()
    with KeyOpener() as opener:
        key = opener.open(_grant(opener.public_key(), api_key))
    head = bytearray(key.size)
    key.copy_into(memoryview(head))
    assert head == api_key.encode()
    key.clear()
    assert key.buffer_is_zeroed()


def test_a_seal_bound_to_another_session_does_not_open() -> None:
    with KeyOpener() as opener, pytest.raises(OpenError, match="does not open"):
        opener.open(_grant(opener.public_key(), fake_anthropic_key(), bound_session="other"))


def _packages_loaded(modules: str, packages: set[str]) -> set[str]:
    """Which of `packages` a fresh interpreter has loaded once it imported `modules`."""
    code = (
        f"import sys, {modules}\n"
        f"print(sorted({{n.partition('.')[0] for n in sys.modules}} & set({sorted(packages)!r})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(ast.literal_eval(out.stdout.strip()))


def test_the_proxy_process_loads_no_cryptography_library() -> None:
    modules = "proxy.app, proxy.attach, proxy.cli, proxy.key_opener"
    assert _packages_loaded(modules, {"cryptography"}) == set()


def test_the_key_opening_child_loads_no_logging_framework_or_event_loop() -> None:
    # It runs on the proxy's start path, on the proxy's core: only what opening needs.
    assert _packages_loaded("proxy.unseal", {"structlog", "asyncio"}) == set()
