"""The full candidate journey over HTTP and processes only: invite, accept, sandbox run
with the anthropic SDK, submit, grader calls, grading-complete, then what each side sees."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from control.app import create_app
from core.settings import Settings
from sandbox.standin import MODEL, FakeAnthropic
from tests.e2e.test_sandbox import _gone, _records
from tests.factories import fake_anthropic_key, make_tenant
from tests.waiting import wait_until

# What these tests check depends on the database: they run on SQLite and PostgreSQL;
# they start the service's own processes.
pytestmark = [pytest.mark.both_databases, pytest.mark.process]

METRUX = str(Path(sys.executable).with_name("metrux"))

CANDIDATE = """
import json, os, sys, time, urllib.request
import anthropic
control, done = sys.argv[1], sys.argv[2]
client = anthropic.Anthropic(max_retries=0)
hi = [{"role": "user", "content": "hi"}]
client.messages.create(model="claude-sonnet-5-5", max_tokens=16, messages=hi)
with client.messages.stream(model="claude-sonnet-5-5", max_tokens=16, messages=hi) as s:
    "".join(s.text_stream)
session_id = json.load(open(sys.argv[3]))["session_id"]
request = urllib.request.Request(
    f"{control}/v1/sessions/{session_id}/submit", method="POST",
    headers={"Authorization": "Bearer " + os.environ["ANTHROPIC_API_KEY"]},
)
urllib.request.urlopen(request).read()
deadline = time.monotonic() + 120  # never outlive a failed test for long
while not os.path.exists(done) and time.monotonic() < deadline:
    time.sleep(0.05)
"""


async def test_candidate_journey(
    aiohttp_server: Any,
    settings: Settings,
    engine: AsyncEngine,
    tmp_path: Path,
    log_output: io.StringIO,
) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    api_key = fake_anthropic_key()
    fake = FakeAnthropic(api_key)
    upstream = str((await aiohttp_server(fake.app)).make_url("")).rstrip("/")
    control_server = await aiohttp_server(create_app(settings, workers=True))
    control = str(control_server.make_url("")).rstrip("/")
    customer = await make_tenant(engine, "Acme")
    other = await make_tenant(engine, "Other")

    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{control}/v1/keys", json={"api_key": api_key}, headers=customer.auth
        ):
            pass
        body = {"candidate_email": "ada@example.com", "assessment_name": "Backend"}
        async with http.post(f"{control}/v1/invites", json=body, headers=customer.auth) as r:
            invite = await r.json()
        async with http.get(f"{control}/v1/invites/{invite['invite_token']}") as r:
            assert (await r.json())["company"] == "Acme"
        async with http.post(f"{control}/v1/invites/{invite['invite_token']}/accept") as r:
            accepted = await r.json()
    session_id = accepted["session_id"]
    assert "bootstrap_token" not in accepted  # the candidate holds nothing that can attach
    # The platform that runs the sandbox asks for the proxy's attach credential.
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{control}/v1/sessions/{session_id}/bootstrap-token", headers=customer.auth
        ) as r,
    ):
        bootstrap = (await r.json())["bootstrap_token"]
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{control}/v1/sessions",
            json={"candidate_email": "x@example.com"},
            headers=customer.auth,
        ) as r,
    ):
        assert r.status == 201  # (a grader token comes with sessions the customer issues)
    credentials = tmp_path / "session.json"
    credentials.write_text(
        json.dumps(
            {
                **{k: accepted[k] for k in ("session_id", "sandbox_token")},
                "bootstrap_token": bootstrap,
                "control_url": control,
            }
        )
    )
    script, done = tmp_path / "candidate.py", tmp_path / "done"
    script.write_text(CANDIDATE)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "METRUX_DATA_DIR": str(settings.data_dir),
        "REDIS_URL": settings.redis_url or "",
        "METRUX_REDIS_PREFIX": settings.redis_prefix,
        "KEY_ENCRYPTION_KEY": base64.b64encode(settings.key_encryption_key or b"").decode(),
        "METRUX_UPSTREAM_URL": upstream,
    }
    log = (tmp_path / "sandbox.log").open("wb")
    launcher = await asyncio.create_subprocess_exec(
        METRUX, "sandbox", "run", "--session-credentials", str(credentials), "--same-user",
        "--", sys.executable, str(script), control, str(done), str(credentials),
        env=env, stdout=log, stderr=log,
    )  # fmt: skip

    try:
        # The candidate submits; the customer's grader works through the same proxy.
        state_file = settings.data_dir / "sandbox" / f"{session_id}.json"
        async with aiohttp.ClientSession() as http:

            async def submitted() -> bool:
                async with http.get(
                    f"{control}/v1/sessions/{session_id}", headers=customer.auth
                ) as r:
                    return (await r.json())["state"] == "submitted" and state_file.exists()

            await wait_until(submitted, within=30, what="the session submitted")
        proxy = json.loads(state_file.read_text())
        grader_token = await _grader_token_for(control, customer, session_id)
        grader = anthropic.AsyncAnthropic(
            base_url=proxy["proxy_url"], api_key=grader_token, max_retries=0
        )
        for _ in range(50):  # the new grader token reaches the running proxy over pub/sub
            try:
                await grader.messages.create(
                    model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "grade"}]
                )
                break
            except anthropic.AuthenticationError:
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("the proxy never accepted the new grader token")
        candidate = anthropic.AsyncAnthropic(
            base_url=proxy["proxy_url"], api_key=accepted["sandbox_token"], max_retries=0
        )
        try:
            await candidate.messages.create(
                model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "more"}]
            )
            raise AssertionError("the candidate's token still worked after submit")
        except anthropic.PermissionDeniedError:
            pass
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{control}/v1/sessions/{session_id}/grading-complete", headers=customer.auth
            ) as r,
        ):
            assert (await r.json())["state"] == "graded"
        # cleared and gone
        await wait_until(lambda: _gone(proxy["proxy_pid"]), within=10, what="the proxy to exit")
    finally:
        done.touch()  # lets the workload exit even if an assertion above failed
    assert await asyncio.wait_for(launcher.wait(), 30) == 0
    log.close()

    records = await _records(settings, engine, session_id)
    assert [(r["actor"], r["stream"]) for r in records] == [
        ("candidate", False),
        ("candidate", True),
        ("grader", False),
    ]
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{control}/v1/sessions/{session_id}/usage/summary", headers=customer.auth
        ) as r:
            assert (await r.json())["calls"] == 3
        async with http.get(f"{control}/v1/audit?limit=100", headers=customer.auth) as r:
            actions = [
                e["action"] for e in (await r.json())["events"] if e["session_id"] == session_id
            ]
        for path in (f"/v1/sessions/{session_id}", f"/v1/sessions/{session_id}/usage"):
            async with http.get(control + path, headers=other.auth) as r:
                assert r.status == 404
        async with http.get(f"{control}/v1/audit?limit=100", headers=other.auth) as r:
            assert all(e["session_id"] != session_id for e in (await r.json())["events"])
    assert list(reversed(actions)) == [
        "session:create",
        "invite:accept",
        "session:bootstrap_token",  # the platform, not the candidate, gets the attach token
        "key:unwrap",
        "session:submit",
        "session:grader_token",
        "session:grading_complete",
        "session:seal",
    ]
    # Nothing personal or secret in any log line of the journey: the control plane's (with
    # its workers and email outbox) and the launcher's and proxy's.
    logs = log_output.getvalue() + (tmp_path / "sandbox.log").read_text()
    for text in ("ada@example.com", "x@example.com", invite["invite_token"], bootstrap):
        assert text not in logs
    assert "email_queued_in_outbox" in logs  # the invite's email was logged, without its address


async def _grader_token_for(control: str, customer: Any, session_id: str) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{control}/v1/sessions/{session_id}/grader-token", headers=customer.auth) as r,
    ):
        assert r.status == 200
        return str((await r.json())["grader_token"])
