"""No candidate credential becomes key material (issue 14, item 3).

Two attackers, each with everything they can hold or read:
- a candidate holding all that invite acceptance returns (sandbox token, candidate token);
- a hostile workload under `metrux sandbox run`, started by a root launcher as the default
  separate user, that reads its environment and files, the launcher's and the proxy's
  /proc entries, the credentials file, and tries every route with every token it finds.
Neither gets a bootstrap token, a proxy credential, a sealed data key or the key.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from core.crypto.sealing import Recipient
from core.settings import Settings
from tests.conftest import CI
from tests.e2e.processes import control_with_key

pytestmark = pytest.mark.process  # starts the service's own processes

METRUX = str(Path(sys.executable).with_name("metrux"))
SYSTEM_PYTHON = Path("/usr/bin/python3")  # reachable by an unprivileged user, unlike the venv
KEY_MATERIAL = re.compile(r"mx[bp]_[A-Za-z0-9_-]{43}|sk-ant-[A-Za-z0-9_-]{20,}")

HOSTILE = r"""
import json, os, re, sys, urllib.request, urllib.error
control, session_id, creds_path = sys.argv[1:4]
token = os.environ["ANTHROPIC_API_KEY"]
found, readable, statuses = set(), [], {}
pattern = re.compile(rb"mx[a-z]_[A-Za-z0-9_-]{43}|sk-ant-[A-Za-z0-9_-]{20,}")

def harvest(label, data):
    for m in pattern.findall(data):
        found.add(m.decode())

def read(path, label):
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except OSError as exc:
        return
    readable.append(label)
    harvest(label, data)

harvest("env", json.dumps(dict(os.environ)).encode())
for root, _, files in os.walk(os.environ["HOME"]):
    for name in files:
        read(os.path.join(root, name), "home")
read(creds_path, "credentials")
me = os.getpid()
for pid in os.listdir("/proc"):
    if not pid.isdigit() or int(pid) == me:
        continue
    for part in ("environ", "cmdline", "mem", "maps"):
        read(f"/proc/{pid}/{part}", f"{part}:{pid}")
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            read(f"/proc/{pid}/fd/{fd}", f"fd:{pid}")
    except OSError:
        pass

def call(method, path, bearer, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(control + path, data=data, method=method)
    request.add_header("Authorization", "Bearer " + bearer)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            harvest("answer", response.read())
            return response.status
    except urllib.error.HTTPError as exc:
        harvest("answer", exc.read())
        return exc.code

public_key = {"suite": "x25519-hkdfsha256-aes256gcm", "public_key": "A" * 43 + "="}
base = f"/v1/sessions/{session_id}"
internal = f"/internal/v1/sessions/{session_id}"
for candidate in sorted({token, *found}):
    if not candidate.startswith("mx"):
        continue
    statuses[candidate[:4] + "attach"] = call("POST", internal + "/attach", candidate, public_key)
    statuses[candidate[:4] + "bootstrap-token"] = call("POST", base + "/bootstrap-token", candidate)
    statuses[candidate[:4] + "reconnect"] = call("POST", base + "/reconnect", candidate)
    empty = {"records": []}
    statuses[candidate[:4] + "usage"] = call("POST", internal + "/usage", candidate, empty)
print(json.dumps({"uid": os.getuid(), "found": sorted(found), "readable": readable,
                  "statuses": statuses}))
"""


@pytest.fixture
def world_readable_dir() -> Iterator[Path]:
    """A directory the workload's unprivileged user can read (pytest's tmp_path is 0700)."""
    with tempfile.TemporaryDirectory(prefix="mx-hostile-") as directory:
        os.chmod(directory, 0o755)  # noqa: S103 - the hostile script must be readable
        yield Path(directory)


async def _world(aiohttp_server: Any, settings: Settings, engine: AsyncEngine) -> dict[str, Any]:
    """A tenant with a key, and a candidate who accepted an invite."""
    setup = await control_with_key(aiohttp_server, settings, engine)
    body = {"candidate_email": "mallory@example.com", "assessment_name": "Backend"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{setup.base}/v1/invites", json=body, headers=setup.tenant.auth) as r:
            invite = await r.json()
        async with http.post(f"{setup.base}/v1/invites/{invite['invite_token']}/accept") as r:
            accepted = await r.json()
    return {"base": setup.base, "tenant": setup.tenant, "accepted": accepted,
            "api_key": setup.api_key, "fake_url": setup.fake_url}  # fmt: skip


async def test_everything_invite_acceptance_returns_attaches_nothing(
    aiohttp_server: Any, settings: Settings, engine: AsyncEngine
) -> None:
    world = await _world(aiohttp_server, settings, engine)
    accepted, base = world["accepted"], world["base"]
    assert not KEY_MATERIAL.search(json.dumps(accepted))
    session = accepted["session_id"]
    attempts = [
        ("POST", f"/internal/v1/sessions/{session}/attach", Recipient().as_json()),
        ("POST", f"/v1/sessions/{session}/bootstrap-token", None),
        ("POST", f"/v1/sessions/{session}/reconnect", None),
        ("POST", f"/internal/v1/sessions/{session}/usage", {"records": []}),
        ("GET", f"/internal/v1/sessions/{session}/signals", None),
        ("GET", f"/v1/sessions/{session}", None),
    ]
    async with aiohttp.ClientSession() as http:
        for token in (accepted["sandbox_token"], accepted["candidate_token"]):
            for method, path, body in attempts:
                async with http.request(
                    method, base + path, json=body, headers={"Authorization": f"Bearer {token}"}
                ) as r:
                    text = await r.text()
                assert r.status in (401, 404), (token[:4], path, r.status)
                assert not KEY_MATERIAL.search(text)


@pytest.mark.skipif(
    os.getuid() != 0 and not CI, reason="needs root to run the workload as another user"
)
async def test_a_hostile_workload_under_the_launcher_gets_no_key_material(
    aiohttp_server: Any, settings: Settings, engine: AsyncEngine, world_readable_dir: Path
) -> None:
    assert os.access(SYSTEM_PYTHON, os.X_OK), "the hostile workload runs on the system python3"
    world = await _world(aiohttp_server, settings, engine)
    accepted, base = world["accepted"], world["base"]
    session = accepted["session_id"]
    # The platform (a member) gets the attach credential and provisions the sandbox.
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{base}/v1/sessions/{session}/bootstrap-token", headers=world["tenant"].auth
        ) as r,
    ):
        bootstrap = (await r.json())["bootstrap_token"]
    credentials = settings.data_dir / "session.json"
    provisioned = {
        "session_id": session,
        "control_url": base,
        "bootstrap_token": bootstrap,
        "sandbox_token": accepted["sandbox_token"],
    }
    credentials.write_text(json.dumps(provisioned))
    credentials.chmod(0o600)
    script = world_readable_dir / "hostile.py"
    script.write_text(HOSTILE)
    script.chmod(0o644)
    # A careless operator's launcher environment: none of it may reach the workload.
    kek = base64.b64encode(settings.key_encryption_key or b"").decode()
    env = {"PATH": os.environ.get("PATH", ""), "METRUX_DATA_DIR": str(settings.data_dir),
           "KEY_ENCRYPTION_KEY": kek, "REDIS_URL": settings.redis_url or "",
           "DATABASE_URL": settings.database_url or "", "METRUX_UPSTREAM_URL": world["fake_url"],
           "METRUX_LOG_FORMAT": "json"}  # fmt: skip
    launcher = await asyncio.create_subprocess_exec(
        METRUX, "sandbox", "run", "--session-credentials", str(credentials),
        "--", str(SYSTEM_PYTHON), str(script), base, session, str(credentials),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd="/",
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(launcher.communicate(), 120)
    assert launcher.returncode == 0, stderr.decode()[-3000:]
    report = json.loads(stdout.decode().strip().splitlines()[-1])
    assert report["uid"] != 0  # the default: the workload is not the launcher's user
    assert report["found"] == [accepted["sandbox_token"]]  # its own token, nothing else
    assert "credentials" not in report["readable"]
    assert not [r for r in report["readable"] if r.startswith(("environ:", "mem:", "fd:"))]
    assert set(report["statuses"].values()) <= {401, 404}, report["statuses"]
    assert kek not in stdout.decode()
    assert world["api_key"] not in stdout.decode() + stderr.decode()
