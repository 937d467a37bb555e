"""`metrux sandbox run`: the workload talks to Claude through the session's proxy, sees no
secret but the sandbox token, and the key is cleared when it exits, dies, or the launcher
vanishes."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from control.usage import store as usage_store
from control.usage.ingest import UsageIngester
from core.redis_names import RedisNames
from core.settings import Settings
from tests.e2e.processes import control_with_key
from tests.waiting import wait_until

pytestmark = pytest.mark.process  # starts the service's own processes

METRUX = str(Path(sys.executable).with_name("metrux"))

WORKLOAD = """
import json, os, sys
import anthropic
client = anthropic.Anthropic(max_retries=0)
hi = [{"role": "user", "content": "hi"}]
ask = {"model": "claude-sonnet-5-5", "max_tokens": 16, "messages": hi}
message = client.messages.create(**ask)
with client.messages.stream(**ask) as s:
    text = "".join(s.text_stream)
seen = {"env": dict(os.environ), "reply": message.content[0].text, "streamed": text}
json.dump(seen, open(sys.argv[1], "w"))
action = sys.argv[2]
if action == "kill":
    os.kill(os.getpid(), 9)
if action == "lock-and-sleep":  # a directory in HOME its owner can no longer write
    locked = os.path.join(os.environ["HOME"], "locked")
    os.mkdir(locked)
    open(os.path.join(locked, "file"), "w").close()
    os.chmod(locked, 0o500)
if action in ("sleep", "lock-and-sleep"):
    import time
    time.sleep(120)
sys.exit(7)
"""


async def _prepare(
    aiohttp_server: Any, settings: Settings, engine: AsyncEngine, tmp_path: Path
) -> dict[str, Any]:
    setup = await control_with_key(aiohttp_server, settings, engine)
    base, tenant = setup.base, setup.tenant
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{base}/v1/sessions", json={"candidate_email": "c@example.com"}, headers=tenant.auth
        ) as r,
    ):
        created = await r.json()
    credentials = tmp_path / "session.json"
    credentials.write_text(
        json.dumps(
            {
                "session_id": created["id"],
                "control_url": base,
                "bootstrap_token": created["bootstrap_token"],
                "sandbox_token": created["sandbox_token"],
            }
        )
    )
    script = tmp_path / "workload.py"
    script.write_text(WORKLOAD)
    # The launcher's environment as a careless operator might leave it: control-plane
    # secrets in it must reach neither the proxy nor the workload.
    env = {
        "PATH": os.environ.get("PATH", ""),
        "METRUX_DATA_DIR": str(settings.data_dir),
        "REDIS_URL": settings.redis_url or "",
        "METRUX_REDIS_PREFIX": settings.redis_prefix,
        "KEY_ENCRYPTION_KEY": base64.b64encode(settings.key_encryption_key or b"").decode(),
        "METRUX_UPSTREAM_URL": setup.fake_url,
        "METRUX_LOG_FORMAT": "json",
    }
    return {"credentials": credentials, "script": script, "env": env, "created": created,
            "api_key": setup.api_key, "fake": setup.fake, "base": base,
            "tenant": tenant}  # fmt: skip


async def _launch(
    run: dict[str, Any], out: Path, action: str, *extra: str, log: Path | None = None
) -> asyncio.subprocess.Process:
    # With `log`, output goes to a file: children that outlive a killed launcher would
    # otherwise hold its pipes open.
    sink: Any = asyncio.subprocess.PIPE if log is None else log.open("wb")
    # --same-user: the workload needs this test's virtualenv, which only root may reach here;
    # test_custody.py runs a workload under the default separate user.
    return await asyncio.create_subprocess_exec(
        METRUX, "sandbox", "run", "--session-credentials", str(run["credentials"]), *extra,
        "--same-user", "--", sys.executable, str(run["script"]), str(out), action,
        env=run["env"], stdout=sink, stderr=sink,
    )  # fmt: skip


async def _records(
    settings: Settings, engine: AsyncEngine, session_id: str
) -> list[dict[str, Any]]:
    redis = Redis.from_url(settings.redis_url or "")
    ingester = UsageIngester(redis, engine, RedisNames(settings.redis_prefix), consumer="t")
    await ingester.ensure_group()
    while await ingester.ingest_once():
        pass
    await redis.aclose()
    async with engine.connect() as conn:
        return await usage_store.list_records(conn, session_id)


async def test_workload_calls_through_the_proxy_and_its_exit_code_passes_through(
    aiohttp_server: Any, settings: Settings, engine: AsyncEngine, tmp_path: Path
) -> None:
    run = await _prepare(aiohttp_server, settings, engine, tmp_path)
    out = tmp_path / "out.json"
    launcher = await _launch(run, out, "exit")
    _, stderr = await asyncio.wait_for(launcher.communicate(), 60)
    assert launcher.returncode == 7, stderr.decode()[-2000:]
    seen = json.loads(out.read_text())
    assert seen["reply"] == "Hello from the fake."
    assert seen["streamed"] == "Hello from the fake."
    env = seen["env"]
    assert (
        env["ANTHROPIC_API_KEY"] == env["ANTHROPIC_AUTH_TOKEN"] == run["created"]["sandbox_token"]
    )
    assert env["ANTHROPIC_BASE_URL"].startswith("http://127.0.0.1:")
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    flat = json.dumps(env)
    for secret in (
        run["api_key"],
        run["created"]["bootstrap_token"],
        run["env"]["KEY_ENCRYPTION_KEY"],
        run["env"]["REDIS_URL"],
    ):
        assert secret not in flat
    assert not any(name.startswith("METRUX_") for name in env)
    assert not _exists(Path(env["HOME"]))  # the temporary HOME (part of the token) is gone
    assert [r.headers["x-api-key"] for r in run["fake"].requests] == [run["api_key"]] * 2
    text = stderr.decode()
    assert '"reason": "sandbox_disconnect"' in text  # the launcher cleared the key on exit
    assert run["api_key"] not in text
    records = await _records(settings, engine, run["created"]["id"])
    assert [(r["stream"], r["complete"]) for r in records] == [(False, True), (True, True)]


async def test_a_killed_workload_clears_the_key(
    aiohttp_server: Any, settings: Settings, engine: AsyncEngine, tmp_path: Path
) -> None:
    run = await _prepare(aiohttp_server, settings, engine, tmp_path)
    out = tmp_path / "out.json"
    launcher = await _launch(run, out, "kill")
    _, stderr = await asyncio.wait_for(launcher.communicate(), 60)
    assert launcher.returncode == 128 + 9
    assert '"reason": "sandbox_disconnect"' in stderr.decode()
    assert not _exists(Path(json.loads(out.read_text())["env"]["HOME"]))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
async def test_a_signalled_launcher_clears_the_key_and_removes_the_workloads_home(
    aiohttp_server: Any, settings: Settings, engine: AsyncEngine, tmp_path: Path, signum: int
) -> None:
    run = await _prepare(aiohttp_server, settings, engine, tmp_path)
    out = tmp_path / "out.json"
    launcher = await _launch(run, out, "lock-and-sleep")
    state = settings.data_dir / "sandbox" / f"{run['created']['id']}.json"
    home = Path(tmp_path / "never")

    def started() -> bool:
        nonlocal home
        if not (out.exists() and state.exists()):
            return False
        home = Path(json.loads(state.read_text())["home"])
        return (home / "locked" / "file").exists()

    await wait_until(started, within=30, what="the workload to lock part of its HOME")
    launcher.send_signal(signum)  # forwarded to the workload, which dies of it
    _, stderr = await asyncio.wait_for(launcher.communicate(), 60)
    assert launcher.returncode == 128 + signum
    assert '"reason": "sandbox_disconnect"' in stderr.decode()
    assert not _exists(home)
    assert not _exists(state)


async def test_a_launcher_signalled_while_its_proxy_starts_stops_the_proxy(
    aiohttp_server: Any, settings: Settings, engine: AsyncEngine, tmp_path: Path
) -> None:
    run = await _prepare(aiohttp_server, settings, engine, tmp_path)
    # A control plane that accepts the attach and never answers: the proxy never gets ready.
    attaching = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        attaching.set()
        await reader.read()  # until the proxy goes away
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    creds = json.loads(run["credentials"].read_text())
    run["credentials"].write_text(json.dumps({**creds, "control_url": f"http://127.0.0.1:{port}"}))
    async with server:
        launcher = await _launch(run, tmp_path / "out.json", "exit")
        await asyncio.wait_for(attaching.wait(), 60)
        launcher.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(launcher.communicate(), 60)
    assert launcher.returncode == 128 + signal.SIGTERM, stderr.decode()[-1500:]
    assert b"sandbox_stopped_by_signal" in stderr
    # The half-started proxy was stopped with the launcher.
    assert _processes_naming(creds["session_id"]) == []


def _exists(path: Path) -> bool:
    return path.exists()


def _processes_naming(text: str) -> list[int]:
    pids = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in path.read_bytes():
                pids.append(int(path.parent.name))
        except OSError:  # the process is gone
            pass
    return pids


def _gone(pid: int) -> bool:
    try:
        return "zombie" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True


def _kill_processes_running(script: Path) -> None:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(script).encode() in cmdline.read_bytes():
                os.kill(int(cmdline.parent.name), signal.SIGKILL)
        except (OSError, ValueError):
            pass


async def _wait_gone(pid: int, within: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if _gone(pid):
            return True
        await asyncio.sleep(0.1)
    return False


async def test_a_lost_launcher_clears_the_key_after_the_grace_period(
    aiohttp_server: Any, settings: Settings, engine: AsyncEngine, tmp_path: Path
) -> None:
    run = await _prepare(aiohttp_server, settings, engine, tmp_path)
    out = tmp_path / "out.json"
    log = tmp_path / "launcher.log"
    launcher = await _launch(run, out, "sleep", "--keepalive-grace", "1", log=log)
    state = settings.data_dir / "sandbox" / f"{run['created']['id']}.json"
    for _ in range(300):  # until the workload has made its calls
        if out.exists() and state.exists():
            break
        await asyncio.sleep(0.1)
    proxy_pid = json.loads(state.read_text())["proxy_pid"]
    launcher.send_signal(signal.SIGKILL)  # the sandbox vanishes: no more keepalives
    await launcher.wait()
    assert await _wait_gone(proxy_pid, within=10)
    assert '"reason": "keepalive_lost"' in log.read_text()
    # The orphaned workload is the sandbox runtime's to reap; end it here.
    _kill_processes_running(run["script"])


async def test_disconnect_command_clears_a_running_sandbox(
    aiohttp_server: Any, settings: Settings, engine: AsyncEngine, tmp_path: Path
) -> None:
    run = await _prepare(aiohttp_server, settings, engine, tmp_path)
    out = tmp_path / "out.json"
    launcher = await _launch(run, out, "sleep")
    state = settings.data_dir / "sandbox" / f"{run['created']['id']}.json"
    await wait_until(
        lambda: out.exists() and state.exists(), within=30, what="the workload and its state file"
    )
    proxy_pid = json.loads(state.read_text())["proxy_pid"]
    disconnect = await asyncio.create_subprocess_exec(
        METRUX, "sandbox", "disconnect", "--session-credentials", str(run["credentials"]),
        env=run["env"], stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, _ = await disconnect.communicate()
    assert disconnect.returncode == 0
    assert b"disconnected" in stdout
    assert await _wait_gone(proxy_pid, within=10)
    launcher.terminate()  # forwarded to the workload
    await asyncio.wait_for(launcher.communicate(), 30)
    assert launcher.returncode == 128 + 15


async def test_a_spent_token_stops_a_second_run_until_the_platform_asks_for_a_fresh_one(
    aiohttp_server: Any, settings: Settings, engine: AsyncEngine, tmp_path: Path
) -> None:
    run = await _prepare(aiohttp_server, settings, engine, tmp_path)
    launcher = await _launch(run, tmp_path / "out0.json", "exit")
    _, stderr = await asyncio.wait_for(launcher.communicate(), 60)
    assert launcher.returncode == 7, stderr.decode()[-1500:]
    # Nothing the sandbox holds renews the token: the second run stops with a hint.
    launcher = await _launch(run, tmp_path / "out1.json", "exit")
    _, stderr = await asyncio.wait_for(launcher.communicate(), 60)
    assert launcher.returncode == 70
    assert b"bootstrap token already used" in stderr
    assert b"/bootstrap-token" in stderr
    base, session_id, auth = run["base"], run["created"]["id"], run["tenant"].auth
    async with aiohttp.ClientSession() as http:
        # The platform (a member's credential) gets a fresh one for the sandbox.
        async with http.post(f"{base}/v1/sessions/{session_id}/bootstrap-token", headers=auth) as r:
            fresh = (await r.json())["bootstrap_token"]
        creds = json.loads(run["credentials"].read_text())
        run["credentials"].write_text(json.dumps({**creds, "bootstrap_token": fresh}))
        launcher = await _launch(run, tmp_path / "out2.json", "exit")
        _, stderr = await asyncio.wait_for(launcher.communicate(), 60)
        assert launcher.returncode == 7, stderr.decode()[-1500:]
        async with http.get(
            f"{base}/v1/audit?action=key:unwrap,session:bootstrap_token", headers=auth
        ) as r:
            events = (await r.json())["events"]
        async with http.post(f"{base}/v1/sessions/{session_id}/end", headers=auth):
            pass
        async with http.post(f"{base}/v1/sessions/{session_id}/bootstrap-token", headers=auth) as r:
            assert r.status == 409  # an ended session cannot be resumed
    assert [(e["action"], e["outcome"]) for e in reversed(events)] == [
        ("key:unwrap", "success"),
        ("key:unwrap", "failure"),
        ("session:bootstrap_token", "success"),
        ("key:unwrap", "success"),
    ]
