"""Asking Anthropic whether a key works, without the key ever entering this process's
client libraries: the check runs in a short-lived process (`python -m proxy.check_key`).

The caller has the key's data key in hand (just generated at upload, or unwrapped through
the KEK provider for a health check). This module seals it to the child's ephemeral public
key, hands the child the sealed data key and the ciphertext over a pipe, and reads back the
verdict. The child asks `GET /v1/models?limit=1` (no tokens spent, answered for any working
key), zeroes the key and exits. Only the verdict and Anthropic's error kind come back:
never the key, and never a response body.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from typing import Protocol

import structlog

from control.keys.health import CheckResult, Verdict
from core.crypto.blob import KeyContext, WrappedKey
from core.crypto.sealing import SealError, load_target, seal, seal_info

log = structlog.get_logger(__name__)
# The child's own start-up (imports) comes on top of the call's timeout.
PROCESS_STARTUP_S = 25.0


class KeyChecker(Protocol):
    async def check(
        self, wrapped: WrappedKey, context: KeyContext, data_key: bytearray
    ) -> CheckResult: ...


class ProcessKeyChecker:
    def __init__(self, upstream_url: str, timeout_s: float = 5.0) -> None:
        self._upstream_url = upstream_url
        self._timeout_s = timeout_s  # how long Anthropic has to answer

    def __repr__(self) -> str:
        return f"<ProcessKeyChecker {self._upstream_url}>"

    async def check(
        self, wrapped: WrappedKey, context: KeyContext, data_key: bytearray
    ) -> CheckResult:
        """The verdict of one check; the caller keeps (and zeroes) `data_key`."""
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy.check_key",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            # Nothing of this process's environment: the child needs none of it.
            env={"PATH": os.environ.get("PATH", "")},
        )  # fmt: skip
        try:
            async with asyncio.timeout(self._timeout_s + PROCESS_STARTUP_S):
                return await self._converse(child, wrapped, context, data_key)
        except (TimeoutError, OSError, ValueError, KeyError, SealError) as exc:
            log.warning("key_check_process_failed", error=type(exc).__name__)
            return CheckResult(Verdict.UNREACHABLE, "check_process_failed")
        finally:
            if child.returncode is None:
                child.kill()
            await child.wait()

    async def _converse(
        self,
        child: asyncio.subprocess.Process,
        wrapped: WrappedKey,
        context: KeyContext,
        data_key: bytearray,
    ) -> CheckResult:
        assert child.stdin is not None
        assert child.stdout is not None
        offer = json.loads(await child.stdout.readline())
        target = load_target(str(offer["suite"]), str(offer["public_key"]))
        check_id = uuid.uuid4().hex
        info = seal_info(
            session_id=f"key-check:{check_id}", tenant_id=context.tenant_id, key_id=context.key_id
        )
        grant = {
            "check_id": check_id,
            "tenant_id": context.tenant_id,
            "key_id": context.key_id,
            "upstream_url": self._upstream_url,
            "timeout_s": self._timeout_s,
            "sealed_key": {
                "sealed_data_key": seal(data_key, target, info).hex(),
                "nonce": wrapped.nonce.hex(),
                "ciphertext": wrapped.ciphertext.hex(),
                "version": wrapped.version,
            },
        }
        child.stdin.write(json.dumps(grant).encode() + b"\n")
        await child.stdin.drain()
        child.stdin.close()
        answer = json.loads(await child.stdout.readline())
        verdict = Verdict(str(answer["verdict"]))  # anything else: ValueError, no verdict
        if verdict is Verdict.UNREACHABLE and str(answer["reason"]).startswith("http_"):
            log.warning("key_check_unanswered", status=answer["reason"])
        return CheckResult(verdict, str(answer["reason"])[:64])
