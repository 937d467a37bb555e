"""Run a session's proxy and the candidate's workload wired to it; clear the key after.

1. Start `metrux proxy run` as a child on a free loopback port, with the bootstrap token in
   its environment only, and wait for its `ready` line (attached and armed).
2. Start the workload with workload_env(): the proxy URL and the sandbox token, nothing else
   secret. Send the proxy a keepalive every few seconds; if the launcher dies, the beats stop
   and the proxy clears the key after the grace period.
3. When the workload exits (or the launcher is told to stop), tell the proxy to clear, wait
   for it to exit, and return the workload's exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import aiohttp
import structlog

from core.tasks import spawn
from sandbox.credentials import SessionCredentials
from sandbox.home import prepare_home
from sandbox.workload_env import workload_env

log = structlog.get_logger(__name__)
READY_TIMEOUT_S = 60.0
PROXY_EXIT_TIMEOUT_S = 15.0


class LaunchError(RuntimeError):
    """The proxy could not be started or attached."""


def state_path(data_dir: Path, session_id: str) -> Path:
    """Where the launcher notes its proxy, for `metrux sandbox disconnect`."""
    return data_dir / "sandbox" / f"{session_id}.json"


async def _post(url: str, token: str) -> int | None:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
            http.post(url, headers={"Authorization": f"Bearer {token}"}) as response,
        ):
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return None


async def _keepalive(proxy_url: str, token: str, every: float) -> None:
    while True:
        await _post(f"{proxy_url}/_proxy/keepalive", token)
        await asyncio.sleep(every)


async def _start_proxy(
    creds: SessionCredentials, parent_env: Mapping[str, str], grace: float
) -> tuple[asyncio.subprocess.Process, str]:
    proxy = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "core.cli", "proxy", "run",
        "--session", creds.session_id, "--control-url", creds.control_url,
        "--listen", "127.0.0.1:0", "--keepalive-grace", str(grace),
        env={**parent_env, "METRUX_BOOTSTRAP_TOKEN": creds.bootstrap_token},
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proxy.stdout is not None
    try:
        line = await asyncio.wait_for(proxy.stdout.readline(), READY_TIMEOUT_S)
    except TimeoutError:
        proxy.kill()
        raise LaunchError("the proxy did not become ready in time") from None
    if not line:
        await proxy.wait()
        raise LaunchError(f"the proxy exited with {proxy.returncode} before it was ready")
    ready = json.loads(line)
    return proxy, str(ready["url"])


async def _reconnect(creds: SessionCredentials) -> str:
    """A fresh bootstrap token for this session (the first was spent by an earlier attach)."""
    url = f"{creds.control_url}/v1/sessions/{creds.session_id}/reconnect"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http,
            http.post(url, headers={"Authorization": f"Bearer {creds.sandbox_token}"}) as response,
        ):
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise LaunchError(f"control plane unreachable ({type(exc).__name__})") from None
    if response.status != 200:
        message = (body or {}).get("error", {}).get("message", "refused")
        raise LaunchError(f"cannot resume the session: {message}")
    return str(body["bootstrap_token"])


async def _stop_proxy(proxy: asyncio.subprocess.Process, proxy_url: str, token: str) -> None:
    if proxy.returncode is None:
        await _post(f"{proxy_url}/_proxy/disconnect", token)
    try:
        await asyncio.wait_for(proxy.wait(), PROXY_EXIT_TIMEOUT_S)
    except TimeoutError:
        proxy.terminate()
        try:
            await asyncio.wait_for(proxy.wait(), 5)
        except TimeoutError:
            proxy.kill()
            await proxy.wait()


def _exit_code(returncode: int) -> int:
    # A workload killed by signal N exits the launcher with 128 + N, as a shell would.
    return 128 - returncode if returncode < 0 else returncode


async def run_sandbox(
    creds: SessionCredentials,
    command: Sequence[str],
    *,
    parent_env: Mapping[str, str],
    data_dir: Path,
    keepalive_grace: float = 30.0,
) -> int:
    try:
        proxy, proxy_url = await _start_proxy(creds, parent_env, keepalive_grace)
    except LaunchError:
        # Most often the bootstrap token was spent by an earlier run: this is a reconnect.
        fresh = dataclasses.replace(creds, bootstrap_token=await _reconnect(creds))
        proxy, proxy_url = await _start_proxy(fresh, parent_env, keepalive_grace)
    state = state_path(data_dir, creds.session_id)
    state.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    state.write_text(
        json.dumps({"proxy_url": proxy_url, "proxy_pid": proxy.pid, "launcher_pid": os.getpid()})
    )
    beats = spawn(_keepalive(proxy_url, creds.sandbox_token, keepalive_grace / 3), name="keepalive")
    home = Path(tempfile.mkdtemp(prefix="mx-home-"))
    try:
        env = workload_env(
            parent_env,
            proxy_url=proxy_url,
            sandbox_token=creds.sandbox_token,
            home=prepare_home(home, creds.sandbox_token),
        )
        log.info("sandbox_workload_starting", session_id=creds.session_id, proxy=proxy_url)
        workload = await asyncio.create_subprocess_exec(*command, env=env)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, workload.send_signal, signum)
        code = _exit_code(await workload.wait())
        log.info("sandbox_workload_exited", session_id=creds.session_id, exit_code=code)
        return code
    finally:
        beats.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beats
        await _stop_proxy(proxy, proxy_url, creds.sandbox_token)
        state.unlink(missing_ok=True)


async def disconnect(creds: SessionCredentials, data_dir: Path) -> bool:
    """Tell a running sandbox's proxy that the candidate is gone; False if none is known."""
    state = state_path(data_dir, creds.session_id)
    try:
        proxy_url = json.loads(state.read_text())["proxy_url"]
    except (OSError, ValueError, KeyError):
        return False
    return await _post(f"{proxy_url}/_proxy/disconnect", creds.sandbox_token) == 200
