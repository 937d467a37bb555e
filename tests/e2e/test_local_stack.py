"""`metrux up` and `metrux demo --fake-upstream`, as a newcomer runs them."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import sqlite3
import sys
import tempfile
from pathlib import Path

import aiohttp
import pytest

from core.redis_server import ping

pytestmark = pytest.mark.process  # starts the service's own processes

METRUX = str(Path(sys.executable).with_name("metrux"))


def _clean_env(**extra: str) -> dict[str, str]:
    scrubbed = ("METRUX_", "DATABASE_URL", "REDIS_URL", "KEY_ENCRYPTION_KEY")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(scrubbed)}, **extra}


async def test_demo_runs_to_completion_and_prints_what_the_database_holds() -> None:
    process = await asyncio.create_subprocess_exec(
        METRUX, "demo", "--fake-upstream", "--keep", env=_clean_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    out = stdout.decode()
    assert process.returncode == 0, out + stderr.decode()[-2000:]
    assert "LOCAL STAND-IN" in out
    data_dir = Path(re.search(r"demo data directory: (\S+)", out).group(1))  # type: ignore[union-attr]
    try:
        rows = re.findall(r"^  (/v1/\S+)\s+(\w+)\s+(\d+)\s+(True|False)\s+(\d+)\s+(\d+)", out, re.M)
        with sqlite3.connect(data_dir / "metrux.db") as db:
            stored = db.execute(
                "SELECT endpoint, actor, http_status, stream, coalesce(input_tokens, 0),"
                " coalesce(output_tokens, 0) FROM usage_records ORDER BY started_at"
            ).fetchall()
            actions = [a for (a,) in db.execute("SELECT action FROM audit_events ORDER BY id")]
        printed = [(e, a, int(s), st == "True", int(i), int(o)) for e, a, s, st, i, o in rows]
        assert printed == [(e, a, s, bool(st), i, o) for e, a, s, st, i, o in stored]
        assert len(printed) == 4
        for action in ("invite:accept", "key:unwrap", "session:end"):
            assert action in actions
            assert action in out
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


async def test_up_serves_and_stops_everything_on_ctrl_c() -> None:
    with tempfile.TemporaryDirectory(prefix="mxup") as directory:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            METRUX, "up", "--port", str(port), env=_clean_env(METRUX_DATA_DIR=directory),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stdout is not None
        banner = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
        assert banner.strip() == "metrux is up"
        ready = None
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                        ready = await r.json()
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
        assert ready == {
            "status": "ready",
            "checks": {"database": "ok", "redis": "ok", "workers": "ok", "ingest": "ok"},
        }
        socket_path = Path(directory) / "redis" / "redis.sock"
        assert ping(socket_path)
        process.send_signal(signal.SIGINT)
        stdout, _ = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0
        assert "metrux stopped" in stdout.decode()
        assert not ping(socket_path)


async def test_demo_stays_with_a_signed_in_link_to_its_session_page() -> None:
    process = await asyncio.create_subprocess_exec(
        METRUX, "demo", "--fake-upstream", "--stay", env=_clean_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    link = ""
    try:
        while not link:
            line = (await asyncio.wait_for(process.stdout.readline(), 120)).decode()
            assert line, "the demo ended without printing a console link"
            if line.startswith("see it in the console: "):
                link = line.split(": ", 1)[1].strip()
        base, query = link.split("/console/signin?", 1)
        fields = dict(part.split("=", 1) for part in query.split("&"))
        assert fields["next"].startswith("/console/sessions/")
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(base, cookie_jar=jar) as http:
            async with http.get(f"/console/signin?{query}") as r:
                assert r.status == 200
            async with http.post(
                "/console/signin", data=fields | {"token": fields["token"]}, allow_redirects=False
            ) as r:
                assert r.status == 303
                assert r.headers["Location"] == fields["next"]
    finally:
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.communicate(), 60)
