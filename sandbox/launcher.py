"""Run a session's proxy and the candidate's workload wired to it; clear the key after.

0. Make the launcher non-dumpable: a workload under the same uid cannot read its memory or
   environment through /proc.
1. Start the proxy (`python -m proxy run`: `metrux proxy run`, faster to start) as a child
   on a free loopback port, with a minimal environment and the bootstrap token through an
   inherited pipe (never in an environment or argv), and wait for its `ready` line
   (attached and armed: the token is spent by then).
2. Start the workload with workload_env(): the proxy URL and the sandbox token, nothing else
   secret. Started as root, the launcher runs the workload under another uid (`nobody` by
   default), which can read neither the credentials file nor either process. Send the proxy
   a keepalive every few seconds; if the launcher dies, the beats stop and the proxy clears
   the key after the grace period.
3. When the workload exits (or the launcher is told to stop: SIGTERM, SIGINT and SIGHUP are
   forwarded to the workload, or stop a launch still waiting for its proxy), tell the proxy
   to clear, wait for it to exit, remove the workload's temporary HOME (it holds part of the
   sandbox token), and return the workload's exit code. Only SIGKILL skips this; the proxy
   then clears the key when the keepalives stop.

A spent bootstrap token is not renewed here: only whoever runs the sandbox can get a fresh
one (`POST /v1/sessions/{id}/bootstrap-token`), never the candidate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from core.hardening import disable_core_dumps
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


# What the proxy is given of the launcher's environment: its own settings, nothing of the
# control plane's (a database, Redis or key-encryption setting would be a leak, not a need).
_PROXY_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "SENTRY_DSN", "METRUX_UPSTREAM_URL",
              "METRUX_LOG_LEVEL", "METRUX_LOG_FORMAT")  # fmt: skip


def proxy_env(parent_env: Mapping[str, str]) -> dict[str, str]:
    """The proxy's environment: a few plain settings, and the proxy's own METRUX_PROXY_*."""
    return {
        name: value
        for name, value in parent_env.items()
        if name in _PROXY_ENV or name.startswith("METRUX_PROXY_")
    }


async def _start_proxy(
    creds: SessionCredentials, parent_env: Mapping[str, str], grace: float
) -> tuple[asyncio.subprocess.Process, str]:
    # The token travels through a pipe the proxy alone inherits and reads once.
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, creds.bootstrap_token.encode())
    finally:
        os.close(write_end)
    try:
        proxy = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy", "run",  # `metrux proxy run`, faster to start
            "--session", creds.session_id, "--control-url", creds.control_url,
            "--listen", "127.0.0.1:0", "--keepalive-grace", str(grace),
            "--bootstrap-token-file", f"/dev/fd/{read_end}",
            env=proxy_env(parent_env), stdout=asyncio.subprocess.PIPE, pass_fds=(read_end,),
        )  # fmt: skip
    finally:
        os.close(read_end)
    assert proxy.stdout is not None
    try:
        line = await asyncio.wait_for(proxy.stdout.readline(), READY_TIMEOUT_S)
    except TimeoutError:
        proxy.kill()
        raise LaunchError("the proxy did not become ready in time") from None
    except asyncio.CancelledError:  # stopped by a signal while the proxy was starting
        proxy.kill()
        await proxy.wait()
        raise
    if not line:
        await proxy.wait()
        raise LaunchError(
            f"the proxy exited with {proxy.returncode} before it was ready (if its bootstrap "
            "token was spent by an earlier run, whoever runs the sandbox gets a fresh one "
            "with POST /v1/sessions/{id}/bootstrap-token)"
        )
    ready = json.loads(line)
    return proxy, str(ready["url"])


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


def workload_user(requested: str | None, *, same_user: bool = False) -> tuple[int, int] | None:
    """The (uid, gid) to run the workload as: the one requested, else `nobody` when the
    launcher is root; None to keep the launcher's own (development: see docs/sandbox.md)."""
    if same_user or (requested is None and os.getuid() != 0):
        return None
    name = requested or "nobody"
    try:
        entry = pwd.getpwnam(name) if not name.isdigit() else pwd.getpwuid(int(name))
    except KeyError:
        raise LaunchError(f"no such user for the workload: {name!r}") from None
    if entry.pw_uid == 0:
        raise LaunchError("the workload must not run as root")
    return entry.pw_uid, entry.pw_gid


def _hand_over(home: Path, uid: int, gid: int) -> None:
    """The workload's private HOME belongs to the workload's user."""
    for path in (home, *home.rglob("*")):
        os.chown(path, uid, gid)


# Signals that end the launcher. Each is forwarded to the workload once it runs; before
# that, it stops the launch. Either way the cleanup below runs: the proxy is told to clear,
# and the workload's HOME (which holds part of the sandbox token) is removed.
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class _Signals:
    """The stop signals the launcher receives, and where they go."""

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.received: int | None = None
        self.workload: asyncio.subprocess.Process | None = None
        self._task = task
        self._stopping = False

    def __call__(self, signum: int) -> None:
        self.received = signum
        if self.workload is not None:
            if self.workload.returncode is None:
                self.workload.send_signal(signum)
        elif not self._stopping:  # once: a second signal must not cut the cleanup short
            self._stopping = True
            self._task.cancel()


def remove_home(home: Path) -> None:
    """Remove the workload's HOME, even where the workload took away its own permissions."""

    def _allow_and_retry(function: Any, path: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(path), 0o700)
            if os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, 0o700)
                shutil.rmtree(path, ignore_errors=True)
            else:
                function(path)

    shutil.rmtree(home, onerror=_allow_and_retry)


async def run_sandbox(
    creds: SessionCredentials,
    command: Sequence[str],
    *,
    parent_env: Mapping[str, str],
    data_dir: Path,
    keepalive_grace: float = 30.0,
    user: str | None = None,
    same_user: bool = False,
) -> int:
    disable_core_dumps()  # non-dumpable: no /proc reads of the launcher by the workload
    run_as = workload_user(user, same_user=same_user)
    if run_as is None:
        log.warning(
            "sandbox_workload_same_user",
            note="the workload runs as the launcher's user: a development mode that protects "
            "nothing from whoever runs it",
        )
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    signals = _Signals(task)
    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, signals, signum)
    try:
        return await _launch(creds, command, parent_env, data_dir, keepalive_grace, run_as, signals)
    except asyncio.CancelledError:
        if signals.received is None:
            raise
        log.info("sandbox_stopped_by_signal", session_id=creds.session_id, signal=signals.received)
        return 128 + signals.received
    finally:
        for signum in _STOP_SIGNALS:
            loop.remove_signal_handler(signum)


async def _launch(
    creds: SessionCredentials,
    command: Sequence[str],
    parent_env: Mapping[str, str],
    data_dir: Path,
    keepalive_grace: float,
    run_as: tuple[int, int] | None,
    signals: _Signals,
) -> int:
    proxy, proxy_url = await _start_proxy(creds, parent_env, keepalive_grace)
    state = state_path(data_dir, creds.session_id)
    home = Path(tempfile.mkdtemp(prefix="mx-home-"))
    beats = spawn(_keepalive(proxy_url, creds.sandbox_token, keepalive_grace / 3), name="keepalive")
    try:
        state.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        state.write_text(
            json.dumps(
                {
                    "proxy_url": proxy_url,
                    "proxy_pid": proxy.pid,
                    "launcher_pid": os.getpid(),
                    "home": str(home),
                }
            )
        )
        env = workload_env(
            parent_env,
            proxy_url=proxy_url,
            sandbox_token=creds.sandbox_token,
            home=prepare_home(home, creds.sandbox_token),
        )
        drop: dict[str, Any] = {}
        if run_as is not None:
            uid, gid = run_as
            _hand_over(home, uid, gid)
            drop = {"user": uid, "group": gid, "extra_groups": []}
        log.info(
            "sandbox_workload_starting",
            session_id=creds.session_id,
            proxy=proxy_url,
            uid=run_as[0] if run_as else os.getuid(),
        )
        signals.workload = await asyncio.create_subprocess_exec(*command, env=env, **drop)
        code = _exit_code(await signals.workload.wait())
        log.info("sandbox_workload_exited", session_id=creds.session_id, exit_code=code)
        return code
    finally:
        await _clean_up(proxy, proxy_url, creds, beats, state, home)


async def _clean_up(
    proxy: asyncio.subprocess.Process,
    proxy_url: str,
    creds: SessionCredentials,
    beats: asyncio.Task[None],
    state: Path,
    home: Path,
) -> None:
    beats.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await beats
    try:
        await _stop_proxy(proxy, proxy_url, creds.sandbox_token)
    finally:
        _remove_files(state, home)


def _remove_files(state: Path, home: Path) -> None:
    state.unlink(missing_ok=True)
    remove_home(home)


async def disconnect(creds: SessionCredentials, data_dir: Path) -> bool:
    """Tell a running sandbox's proxy that the candidate is gone; False if none is known."""
    state = state_path(data_dir, creds.session_id)
    try:
        proxy_url = json.loads(state.read_text())["proxy_url"]
    except (OSError, ValueError, KeyError):
        return False
    return await _post(f"{proxy_url}/_proxy/disconnect", creds.sandbox_token) == 200
