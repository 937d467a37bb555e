"""The proxy's only peer is the control plane: a real `metrux proxy run` holds no Redis or
database setting, opens no connection but to the control plane and the upstream, and its
records and signals survive a control-plane restart."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from control.sessions import store as session_store
from control.sessions.lifecycle import SessionState
from control.usage import store as usage_store
from control.usage.ingest import UsageIngester
from core.crypto.sealing import Recipient
from core.redis_names import RedisNames
from core.settings import Settings
from sandbox.standin import MODEL, StreamReply
from tests.control.test_usage_ingest import record
from tests.e2e.conftest import Stack, start_proxy_for
from tests.e2e.processes import RestartableControl, finish, start_proxy_process
from tests.factories import METRICS_AUTH
from tests.waiting import wait_until

pytestmark = pytest.mark.process  # starts the service's own processes

PROMPT = [{"role": "user", "content": "hi"}]
TCP_ESTABLISHED = "01"


def outbound_tcp_peers(pid: int, listen_port: int) -> set[int]:
    """Remote ports of the process's established TCP connections, less those accepted on
    its own listening port (the sandbox's calls)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    peers = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            outbound = int(local.rsplit(":", 1)[1], 16) != listen_port
            if inode in inodes and state == TCP_ESTABLISHED and outbound:
                peers.add(int(remote.rsplit(":", 1)[1], 16))
    return peers


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


@pytest.fixture
async def control(settings: Settings) -> AsyncIterator[RestartableControl]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    control = RestartableControl(settings)
    await control.start()
    yield control
    await control.stop()


async def stored_records(settings: Settings, engine: AsyncEngine, session_id: str) -> list[Any]:
    """Ingest what the control plane queued, then read the session's stored records."""
    redis = Redis.from_url(settings.redis_url or "")
    try:
        ingester = UsageIngester(redis, engine, RedisNames(settings.redis_prefix), consumer="t")
        await ingester.ensure_group()
        while await ingester.ingest_once():
            pass
    finally:
        await redis.aclose()
    async with engine.connect() as conn:
        return await usage_store.list_records(conn, session_id)


async def calls(run: dict[str, Any], count: int) -> None:
    client = anthropic.AsyncAnthropic(
        base_url=run["ready"]["url"], api_key=run["created"]["sandbox_token"], max_retries=0
    )
    for _ in range(count):
        await client.messages.create(model=MODEL, max_tokens=8, messages=PROMPT)


def exit_event(stderr: str) -> dict[str, Any]:
    [event] = [json.loads(line) for line in stderr.splitlines() if '"proxy_exiting"' in line]
    return event


def test_the_proxy_imports_no_redis_client_and_no_aiohttp() -> None:
    """Every proxy module, imported in a fresh interpreter, leaves redis-py and aiohttp
    unloaded: the proxy speaks HTTP on its own sans-io core (proxy/http/)."""
    code = (
        "import importlib, pkgutil, sys, proxy\n"
        "for m in pkgutil.walk_packages(proxy.__path__, 'proxy.'):\n"
        "    importlib.import_module(m.name)\n"
        "import proxy.cli\n"
        "print(sorted(n for n in sys.modules if n.partition('.')[0] in ('redis', 'aiohttp')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


async def test_a_proxy_process_holds_no_redis_or_database_setting_and_talks_only_to_its_peers(
    aiohttp_server: Any, settings: Settings, engine: AsyncEngine, control: RestartableControl
) -> None:
    run = await start_proxy_process(aiohttp_server, settings, engine, control=control)
    process = run["process"]
    await calls(run, 2)
    environ = Path(f"/proc/{process.pid}/environ").read_bytes().split(b"\0")  # noqa: ASYNC240
    names = {entry.split(b"=", 1)[0].decode() for entry in environ if entry}
    assert not names & {"REDIS_URL", "DATABASE_URL", "METRUX_REDIS_PREFIX", "KEY_ENCRYPTION_KEY"}
    assert not {n for n in names if n.startswith(("AWS_", "METRUX_KMS", "METRUX_KEK"))}
    assert (settings.redis_url or "").encode() not in b"\0".join(environ)
    peers = outbound_tcp_peers(process.pid, port_of(run["ready"]["url"]))
    assert peers <= {control.port, port_of(run["fake_url"])}
    assert control.port in peers  # its signal stream
    assert 6379 not in peers
    process.terminate()
    code, stderr = await finish(process)
    assert (code, exit_event(stderr)["unsent_records"]) == (0, 0)
    assert len(await stored_records(settings, engine, run["created"]["id"])) == 2


# The restart tests run on Postgres only. They restart the control plane inside this test
# process, and on SQLite a request cancelled mid-query by that shutdown can leave a
# connection holding the file's write lock in this process (every transaction here is
# BEGIN IMMEDIATE), which no real restart, a new process, would keep.
ON_POSTGRES = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


@ON_POSTGRES
async def test_records_survive_a_control_plane_restart_none_lost_none_doubled(
    aiohttp_server: Any, settings: Settings, engine: AsyncEngine, control: RestartableControl
) -> None:
    run = await start_proxy_process(aiohttp_server, settings, engine, control=control)
    session_id = run["created"]["id"]
    await calls(run, 3)
    await control.stop()
    await calls(run, 5)  # the upstream still answers; the records wait in the proxy
    await control.start()

    # Delivered once the proxy's retry reaches the new control plane; then a clean stop.
    async def all_stored() -> bool:  # on the proxy's own retry schedule
        return len(await stored_records(settings, engine, session_id)) >= 8

    await wait_until(all_stored, within=60, what="the 8 records in the database")
    run["process"].terminate()
    code, stderr = await finish(run["process"], within=60)
    assert (code, exit_event(stderr)["unsent_records"]) == (0, 0), stderr[-3000:]
    records = await stored_records(settings, engine, session_id)
    assert len(records) == 8
    assert len({r["record_id"] for r in records}) == 8
    assert sorted(r["chain_seq"] for r in records) == list(range(1, 9))


@ON_POSTGRES
@pytest.mark.parametrize("ended_while_down", [True, False], ids=["while-down", "after-restart"])
async def test_an_end_reaches_the_proxy_across_a_control_plane_restart(
    aiohttp_server: Any,
    settings: Settings,
    engine: AsyncEngine,
    control: RestartableControl,
    ended_while_down: bool,
) -> None:
    run = await start_proxy_process(aiohttp_server, settings, engine, control=control)
    session_id = run["created"]["id"]
    await calls(run, 1)
    await control.stop()
    if ended_while_down:  # nothing can publish it: the proxy re-reads the state on reconnect
        async with engine.begin() as conn:
            await session_store.set_state(
                conn, session_id, SessionState.ENDED, now=dt.datetime.now(dt.UTC)
            )
    await control.start()
    if not ended_while_down:
        # The proxy's stream is back on the new process: the end goes through its hub.
        async with aiohttp.ClientSession() as http:

            async def online() -> bool:
                async with http.get(
                    f"{control.url}/v1/sessions/{session_id}", headers=run["tenant"].auth
                ) as r:
                    return bool((await r.json())["proxy_online"])

            await wait_until(online, within=30, what="the proxy online on the new process")
            async with http.post(
                f"{control.url}/v1/sessions/{session_id}/end", headers=run["tenant"].auth
            ) as r:
                assert r.status == 200
    code, stderr = await finish(run["process"])
    event = exit_event(stderr)
    assert code == 0
    assert event["reason"] == ("session_ended" if ended_while_down else "signal_end")
    assert event["unsent_records"] == 0
    assert len(await stored_records(settings, engine, session_id)) == 1


async def test_a_proxy_cut_off_from_the_control_plane_clears_its_key_after_the_grace(
    aiohttp_server: Any, settings: Settings, engine: AsyncEngine, control: RestartableControl
) -> None:
    run = await start_proxy_process(
        aiohttp_server,
        settings,
        engine,
        control=control,
        proxy_settings={"METRUX_PROXY_CONTROL_GRACE_S": "2"},
    )
    await calls(run, 1)
    await control.stop()
    # Cleared after the grace, then it tries to flush its record for a while, and exits.
    code, stderr = await finish(run["process"], within=60)
    event = exit_event(stderr)
    assert (code, event["reason"]) == (0, "control_plane_unreachable")


async def _attach(stack: Stack, session: dict[str, Any]) -> str:
    """Attach `session` through the real endpoint; its proxy credential."""
    async with stack.control.post(
        f"/internal/v1/sessions/{session['id']}/attach",
        json=Recipient().as_json(),
        headers={"Authorization": f"Bearer {session['bootstrap_token']}"},
    ) as r:
        assert r.status == 200
        return str((await r.json())["proxy_token"])


async def _new_session(stack: Stack) -> dict[str, Any]:
    async with stack.control.post(
        "/v1/sessions", json={"candidate_email": "other@example.com"}, headers=stack.tenant.auth
    ) as r:
        assert r.status == 201
        return dict(await r.json())


async def test_a_record_naming_another_session_is_refused_and_changes_nothing(
    stack: Stack,
) -> None:
    other = await _new_session(stack)
    credential = await _attach(stack, other)
    # The victim is the stack's own session, in the same tenant.
    forged = record(stack.session_id, tenant_id=stack.tenant.tenant_id).as_dict()
    honest = record(other["id"], tenant_id=stack.tenant.tenant_id).as_dict()
    async with stack.control.post(
        f"/internal/v1/sessions/{other['id']}/usage",
        json={"records": [forged, honest]},
        headers={"Authorization": f"Bearer {credential}"},
    ) as r:
        answer = await r.json()
    assert r.status == 200
    assert answer["accepted"] == 1
    assert [(x["record_id"], x["reason"]) for x in answer["refused"]] == [
        (forged["record_id"], "wrong_session")
    ]
    # The other session's credential is no key to the victim's route either.
    async with stack.control.post(
        f"/internal/v1/sessions/{stack.session_id}/usage",
        json={"records": [forged]},
        headers={"Authorization": f"Bearer {credential}"},
    ) as r:
        assert r.status == 401
    assert await stack.records() == []
    async with stack.engine.connect() as conn:
        stored = await usage_store.list_records(conn, other["id"])
    assert [r["record_id"] for r in stored] == [honest["record_id"]]
    async with stack.control.get("/metrics", headers=METRICS_AUTH) as r:
        text = await r.text()
    assert 'metrux_usage_records_refused_total{reason="wrong_session"} 1.0' in text


@pytest.mark.parametrize("stack", [{"max_requests": 5, "max_output_tokens": 100}], indirect=True)
async def test_a_new_attach_stops_the_earlier_proxy_before_it_serves_and_the_budget_carries_over(
    stack: Stack,
) -> None:
    """A reconnect's proxy attaches: the earlier one finds its credential superseded and
    clears its key before the new grant is handed out, so one session never has two
    proxies serving; the new one starts from the budget the records show as spent."""
    for _ in range(2):  # 12 output tokens each
        await stack.sdk().messages.create(model=MODEL, max_tokens=8, messages=PROMPT)
    assert len(await stack.records()) == 2  # delivered before the new attach
    async with stack.control.post(
        f"/v1/sessions/{stack.session_id}/bootstrap-token", headers=stack.tenant.auth
    ) as r:
        bootstrap = (await r.json())["bootstrap_token"]
    second = await start_proxy_for(
        stack.settings,
        str(stack.control.make_url("")).rstrip("/"),
        stack.session_id,
        bootstrap,
        stack.fake_url,
    )
    assert stack.proxy.stopped.is_set()  # cleared before the new grant came back
    assert stack.proxy.stop_reason == "superseded"
    assert stack.proxy.key.buffer_is_zeroed()
    new_session = second.session
    assert new_session.info.epoch == stack.proxy.info.epoch + 1
    assert (new_session.budget.requests, new_session.budget.output_used) == (2, 24)
    new = anthropic.AsyncAnthropic(base_url=second.url, api_key=stack.sandbox_token, max_retries=0)
    await new.messages.create(model=MODEL, max_tokens=8, messages=PROMPT)
    with pytest.raises(anthropic.PermissionDeniedError, match="output-token budget"):
        await new.messages.create(model=MODEL, max_tokens=80, messages=PROMPT)  # 64 left
    await second.stop()
    records = await stack.records()
    assert len(records) == 3
    assert sorted(r["chain_seq"] for r in records) == [1, 2, 3]


@pytest.mark.parametrize("stack", [{"max_output_tokens": 5000}], indirect=True)
async def test_aborted_streams_cannot_exceed_the_output_budget(stack: Stack) -> None:
    """Four 4,000-token streams the client aborts after their first event: the first keeps
    its whole reservation charged, so the next ones are refused; its record says incomplete."""
    stream_body = json.dumps(
        {"model": MODEL, "max_tokens": 4000, "stream": True, "messages": PROMPT}
    ).encode()
    statuses = []
    async with aiohttp.ClientSession() as http:
        for _ in range(4):
            stack.fake.enqueue(StreamReply(hang_after=2))
            response = await http.post(
                stack.proxy_url + "/v1/messages",
                data=stream_body,
                headers={"x-api-key": stack.sandbox_token, "content-type": "application/json"},
            )
            statuses.append(response.status)
            if response.status == 200:
                await response.content.readuntil(b"\n\n")
            response.close()  # the client goes away before message_delta
            await asyncio.wait_for(stack.proxy.idle.wait(), 10)
    assert statuses == [200, 403, 403, 403]
    assert stack.proxy.budget.output_used == 4000
    [record] = await stack.records()
    assert (record["complete"], record["error_type"]) == (False, "client_aborted")
    assert (record["output_tokens"], record["reserved_output_tokens"]) == (1, 4000)


async def test_a_fenced_proxy_may_deliver_only_records_of_calls_it_started_before_the_fence(
    stack: Stack,
) -> None:
    session = await _new_session(stack)
    first = await _attach(stack, session)
    before_fence = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    async with stack.control.post(
        f"/v1/sessions/{session['id']}/bootstrap-token", headers=stack.tenant.auth
    ) as r:
        session["bootstrap_token"] = (await r.json())["bootstrap_token"]
    await _attach(stack, session)
    tenant = stack.tenant.tenant_id
    early = record(session["id"], tenant_id=tenant, started_at=before_fence.isoformat())
    late = record(session["id"], tenant_id=tenant, started_at=dt.datetime.now(dt.UTC).isoformat())
    headers = {"Authorization": f"Bearer {first}"}
    async with stack.control.post(
        f"/internal/v1/sessions/{session['id']}/usage",
        json={"records": [early.as_dict(), late.as_dict()]},
        headers=headers,
    ) as r:
        answer = await r.json()
    assert answer["accepted"] == 1
    assert [(x["record_id"], x["reason"]) for x in answer["refused"]] == [
        (late.record_id, "fenced")
    ]
    # Its signal stream tells it at once that it is superseded, and ends.
    async with stack.control.get(
        f"/internal/v1/sessions/{session['id']}/signals", headers=headers
    ) as r:
        body = (await r.read()).decode()
    [event] = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]
    assert (event["current"], event["final"], event["epoch"]) == (False, True, 2)
