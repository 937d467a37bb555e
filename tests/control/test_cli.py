"""The `metrux control` commands, run through the real entry point."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog

from control.app import create_app
from control.db import migrate
from control.retention.rules import render_markdown
from core.cli import main
from core.settings import Settings
from tests.factories import bearer
from tests.scan import database_text

# What these tests check depends on the database: they run on SQLite and PostgreSQL;
# they start the service's own processes.
pytestmark = [pytest.mark.both_databases, pytest.mark.process]


def _env(tmp_path: Path, database_url: str, **extra: str) -> dict[str, str]:
    return {"METRUX_DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": database_url, **extra}


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Call `metrux` in-process; the logging it configures is undone afterwards."""
    saved_handlers = list(logging.getLogger().handlers)

    def invoke(env: dict[str, str], *argv: str) -> tuple[int, str, str]:
        for name in ("METRUX_DATA_DIR", "DATABASE_URL", "REDIS_URL", "KEY_ENCRYPTION_KEY"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    yield invoke
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = saved_handlers


def test_migrate_then_create_tenant_prints_a_working_owner_token(
    run: Any, tmp_path: Path, database_url: str
) -> None:
    env = _env(tmp_path, database_url)
    code, out, _ = run(env, "control", "migrate")
    assert code == 0
    assert json.loads(out) == {"event": "migrated", "revision": migrate.head_revision()}
    code, out, _ = run(
        env, "control", "create-tenant", "Acme Hiring", "--owner-email", "Boss@Acme.example"
    )
    assert code == 0
    created = json.loads(out)
    assert set(created) == {"tenant_id", "owner_member_id", "owner_token"}
    assert created["owner_token"].startswith("mxk_")


async def test_created_owner_token_authenticates(
    run: Any, tmp_path: Path, database_url: str, aiohttp_client: Any, redis_url: str
) -> None:
    env = _env(tmp_path, database_url)
    # The CLI runs its own event loop, so it goes to a thread as it would be its own process.
    code, out, _ = await asyncio.to_thread(
        run, env, "control", "create-tenant", "Acme", "--owner-email", "a@acme.example"
    )
    assert code == 0
    token = json.loads(out)["owner_token"]
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, redis_url=redis_url)
    client = await aiohttp_client(create_app(settings))
    async with client.get("/v1/audit", headers=bearer(token)) as r:
        actions = [e["action"] for e in (await r.json())["events"]]
    assert actions == ["member:create", "tenant:create"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["control", "create-tenant", "Acme", "--owner-email", "nope"], "--owner-email"),
        (["control", "create-tenant", " ", "--owner-email", "a@b.example"], "NAME"),
    ],
)
def test_create_tenant_refuses_bad_arguments(
    run: Any, tmp_path: Path, database_url: str, argv: list[str], message: str
) -> None:
    code, out, err = run(_env(tmp_path, database_url), *argv)
    assert code == 1
    assert message in err
    assert out == ""


def test_bad_setting_stops_start_up_naming_the_variable(run: Any, tmp_path: Path) -> None:
    code, _, err = run({"DATABASE_URL": "mysql://x@y/z"}, "control", "migrate")
    assert code == 2
    assert "DATABASE_URL" in err


def test_serve_refuses_an_unmigrated_database(run: Any, tmp_path: Path) -> None:
    env = {"METRUX_DATA_DIR": str(tmp_path / "fresh")}
    code, _, err = run(env, "control", "serve", "--port", "0")
    assert code == 1
    assert "metrux control migrate" in err


def test_console_script_is_installed() -> None:
    """The `metrux` command exists and lists the control subcommands."""
    result = subprocess.run(
        [str(Path(sys.executable).with_name("metrux")), "control", "--help"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0
    for command in ("migrate", "serve", "create-tenant"):
        assert command in result.stdout


async def test_outbox_prints_queued_invites(
    run: Any, tmp_path: Path, database_url: str, aiohttp_client: Any, redis_url: str, engine: Any
) -> None:
    from tests.factories import fake_anthropic_key, make_tenant

    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, redis_url=redis_url)
    client = await aiohttp_client(create_app(settings))
    tenant = await make_tenant(engine)
    async with client.post("/v1/keys", json={"api_key": fake_anthropic_key()}, headers=tenant.auth):
        pass
    body = {"candidate_email": "cand@example.com", "assessment_name": "Take-home"}
    async with client.post("/v1/invites", json=body, headers=tenant.auth) as r:
        token = (await r.json())["invite_token"]
    code, out, _ = await asyncio.to_thread(run, _env(tmp_path, database_url), "control", "outbox")
    assert code == 0
    # (the app's own log lines, unconfigured in this test, also reach stdout)
    [message] = [json.loads(line) for line in out.splitlines() if line.startswith('{"id"')]
    assert message["to_email"] == "cand@example.com"
    assert token in message["body"]
    # Handed over once: the stored copy keeps only the link's hash, and is not printed again.
    code, out, _ = await asyncio.to_thread(run, _env(tmp_path, database_url), "control", "outbox")
    assert (code, [line for line in out.splitlines() if line.startswith('{"id"')]) == (0, [])
    assert token not in await database_text(engine, settings)
    async with engine.connect() as conn:
        from sqlalchemy import select

        from control.db.schema import audit_events

        reads = (
            await conn.execute(
                select(audit_events.c.details).where(audit_events.c.action == "operator:read")
            )
        ).all()
    # Every tenant's emails: each read audited, with how many messages it handed over.
    assert [json.loads(r.details)["rows"] for r in reads] == [1, 0]
    assert {json.loads(r.details)["command"] for r in reads} == {"outbox"}


def test_retention_run_and_doc_and_operator(run: Any, tmp_path: Path, database_url: str) -> None:
    env = _env(tmp_path, database_url)
    assert run(env, "control", "migrate")[0] == 0
    code, out, _ = run(
        env, "control", "retention", "run", "--dry-run", "--now", "2031-01-01T00:00:00Z"
    )
    assert code == 0
    report = json.loads(out)
    assert (report["event"], report["now"]) == ("retention_dry_run", "2031-01-01T00:00:00+00:00")
    assert set(report["counts"]) >= {"sessions_soft_deleted", "candidate_notices_sent"}
    code, out, _ = run(env, "control", "retention", "run")
    assert (code, json.loads(out)["event"]) == (0, "retention_run")

    code, out, _ = run(env, "control", "retention", "doc")
    assert (code, out) == (0, render_markdown())

    code, out, _ = run(env, "control", "create-operator", "Ops@Metrux.example")
    assert code == 0
    assert json.loads(out)["operator_token"].startswith("mxo_")


@pytest.mark.parametrize("when", ["yesterday", "2031-01-01T00:00:00"])
def test_retention_run_refuses_a_bad_time(
    run: Any, tmp_path: Path, database_url: str, when: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        run(_env(tmp_path, database_url), "control", "retention", "run", "--now", when)
    assert exited.value.code == 2


def test_close_tenant_of_an_unknown_tenant_fails(
    run: Any, tmp_path: Path, database_url: str, redis_url: str
) -> None:
    env = _env(tmp_path, database_url, REDIS_URL=redis_url)
    assert run(env, "control", "migrate")[0] == 0
    code, out, err = run(env, "control", "close-tenant", "no-such-tenant")
    assert (code, out) == (1, "")
    assert "tenant not found" in err


def test_blocklist_add_list_remove_is_audited(
    run: Any, tmp_path: Path, database_url: str, redis_url: str
) -> None:
    env = _env(
        tmp_path, database_url, REDIS_URL=redis_url, METRUX_REDIS_PREFIX=f"metrux-cli-{id(run)}:"
    )
    code, out, _ = run(env, "control", "blocklist", "add", "203.0.113.5", "--for", "600")
    assert code == 0
    assert json.loads(out)["ip"] == "203.0.113.5"
    code, out, _ = run(env, "control", "blocklist", "list")
    [listed] = [json.loads(line) for line in out.splitlines()]
    assert (listed["ip"], listed["source"], listed["seconds"]) == ("203.0.113.5", "operator", 600)
    assert 0 < listed["remaining_s"] <= 600
    code, _, err = run(env, "control", "blocklist", "add", "not-an-ip")
    assert code == 1
    assert "not an IP address" in err
    code, out, _ = run(env, "control", "blocklist", "remove", "203.0.113.5")
    assert (code, json.loads(out)["removed"]) == (0, True)
    code, out, _ = run(env, "control", "blocklist", "list")
    assert out == ""
    code, _, err = run(env, "control", "blocklist", "remove", "203.0.113.5")
    assert code == 1
    assert "was not blocked" in err

    async def actions() -> list[str]:
        from sqlalchemy import select

        from control.db.engine import create_engine
        from control.db.schema import audit_events

        engine = create_engine(database_url)
        async with engine.connect() as conn:
            rows = await conn.execute(select(audit_events.c.action).order_by(audit_events.c.id))
            found = [row.action for row in rows]
        await engine.dispose()
        return found

    assert asyncio.run(actions()) == ["ip:block", "ip:unblock", "ip:unblock"]


def test_scan_logs_finds_a_live_key_in_any_usual_form_and_names_it_by_id(
    run: Any, tmp_path: Path, database_url: str
) -> None:
    from urllib.parse import quote

    from control.keys.service import fingerprint
    from tests.factories import fake_anthropic_key

    env = _env(tmp_path, database_url)
    live, revoked, stranger = fake_anthropic_key(), fake_anthropic_key(), fake_anthropic_key()

    async def store_keys() -> None:
        from control.db.engine import create_engine
        from control.db.schema import api_keys
        from tests.factories import make_tenant

        engine = create_engine(database_url)
        tenant = await make_tenant(engine)
        now = dt.datetime.now(dt.UTC)
        async with engine.begin() as conn:
            for key_id, key, revoked_at in (
                ("key_live", live, None),
                ("key_gone", revoked, now),
            ):
                await conn.execute(
                    api_keys.insert().values(
                        id=key_id, tenant_id=tenant.tenant_id, format_version=1,
                        last_four=key[-4:], fingerprint=fingerprint(key.encode()),
                        created_at=now, revoked_at=revoked_at,
                    )
                )  # fmt: skip
        await engine.dispose()

    asyncio.run(store_keys())
    log = tmp_path / "app.log"
    log.write_text(
        "\n".join(
            [
                '{"event": "fine", "tokens": 12}',
                json.dumps({"headers": {"x-api-key": live}}),  # plain, inside JSON
                json.dumps(json.dumps({"k": live + "xyz"})),  # JSON in JSON, with a tail
                "GET /?key=" + quote(live, safe=""),  # percent-encoded
                "revoked " + revoked,  # no longer live: not reported
                "stranger " + stranger,  # not a customer key here
            ]
        )
    )
    code, out, err = run(env, "control", "scan-logs", str(log))
    assert code == 1
    found = [json.loads(line) for line in out.splitlines()]
    assert [(f["line"], f["key_id"], f["last4"]) for f in found] == [
        (2, "key_live", live[-4:]),
        (3, "key_live", live[-4:]),
        (4, "key_live", live[-4:]),
    ]
    assert live not in out + err
    clean = tmp_path / "clean.log"
    clean.write_text('{"event": "fine"}\n')
    code, _, err = run(env, "control", "scan-logs", str(clean))
    assert code == 0
    assert "0 line(s)" in err
    code, _, err = run(env, "control", "scan-logs", str(tmp_path / "missing.log"))
    assert code == 1
    assert "no such file" in err

    async def reads() -> list[str]:
        from sqlalchemy import select

        from control.db.engine import create_engine
        from control.db.schema import audit_events

        engine = create_engine(database_url)
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(audit_events.c.details).where(audit_events.c.action == "operator:read")
            )
            found = [json.loads(row.details)["command"] for row in rows]
        await engine.dispose()
        return found

    # Each scan read every tenant's key fingerprints: audited (the missing file read none).
    assert asyncio.run(reads()) == ["scan-logs", "scan-logs"]


async def test_usage_dead_letters_lists_them_and_the_read_is_audited(
    run: Any, tmp_path: Path, database_url: str, engine: Any
) -> None:
    from sqlalchemy import select

    from control.db.schema import audit_events
    from control.usage import store

    letters = [
        store.DeadLetter("1-0", "invalid: started_at: bad", '{"x": 1}', "r1", "s1", "t1"),
        store.DeadLetter("2-0", "unknown_session", '{"x": 2}', "r2", "s2", "t2"),
    ]
    async with engine.begin() as conn:
        await store.insert_dead_letters(conn, letters, now=dt.datetime.now(dt.UTC))
    env = _env(tmp_path, database_url)
    args = ("control", "usage", "dead-letters")
    code, out, _ = await asyncio.to_thread(run, env, *args)
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines() if line.startswith('{"id"')]
    assert [(r["record_id"], r["reason"]) for r in rows] == [
        ("r2", "unknown_session"),
        ("r1", "invalid: started_at: bad"),
    ]
    assert "payload" not in rows[0]
    code, out, _ = await asyncio.to_thread(run, env, *args, "--tenant", "t1", "--payload")
    [row] = [json.loads(line) for line in out.splitlines() if line.startswith('{"id"')]
    assert (row["record_id"], row["payload"]) == ("r1", '{"x": 1}')
    async with engine.connect() as conn:
        reads = (
            await conn.execute(
                select(audit_events.c.details).where(audit_events.c.action == "operator:read")
            )
        ).all()
    assert len(reads) == 2
    with pytest.raises(SystemExit) as refused:  # argparse's usage error
        run(env, "control", "usage", "dead-letters", "--limit", "0")
    assert refused.value.code == 2


async def test_login_link_prints_a_single_use_audited_link(
    run: Any, tmp_path: Path, database_url: str, engine: Any, aiohttp_client: Any
) -> None:
    from control.identity import service
    from control.web.errors import ApiError

    env = _env(tmp_path, database_url, METRUX_PUBLIC_URL="https://metrux.example")
    code, out, _ = await asyncio.to_thread(
        run, env, "control", "create-tenant", "Acme", "--owner-email", "boss@acme.example"
    )
    assert code == 0
    code, out, err = await asyncio.to_thread(run, env, "control", "login-link", "Boss@Acme.example")
    assert code == 0
    assert out.startswith("https://metrux.example/console/signin?token=mxl_")
    assert "single use, until" in err
    token = out.strip().rsplit("=", 1)[1]
    from control.audit.actions import ActorType
    from control.audit.store import Actor

    visitor = Actor(ActorType.MEMBER, None, ip="127.0.0.1")
    now = dt.datetime.now(dt.UTC)
    member, issued = await service.sign_in_with_link(
        engine, token, visitor, previous_cookie=None, lifetime=dt.timedelta(hours=1), now=now
    )
    assert issued.expires_at > now
    with pytest.raises(ApiError) as refused:  # once only
        await service.sign_in_with_link(
            engine, token, visitor, previous_cookie=None, lifetime=dt.timedelta(hours=1), now=now
        )
    assert refused.value.status == 401
    code, _, err = await asyncio.to_thread(run, env, "control", "login-link", "nobody@acme.example")
    assert (code, "not a member" in err) == (1, True)
    async with engine.connect() as conn:
        from sqlalchemy import select

        from control.db.schema import audit_events

        actions = [
            r.action
            for r in await conn.execute(
                select(audit_events.c.action).where(audit_events.c.tenant_id == member.tenant_id)
            )
        ]
    assert actions.count("auth:login_link") == 1
    assert actions.count("auth:login") == 1


async def test_an_expired_login_link_is_refused(engine: Any) -> None:
    from control.audit.actions import ActorType
    from control.audit.store import Actor
    from control.identity import service
    from control.web.errors import ApiError
    from tests.factories import OPERATOR, make_tenant

    tenant = await make_tenant(engine)
    made = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=16)
    link = await service.issue_login_link(
        engine, OPERATOR, email=tenant.owner_email, tenant_id=None, now=made
    )
    with pytest.raises(ApiError):
        await service.sign_in_with_link(
            engine, link.token, Actor(ActorType.MEMBER, None), previous_cookie=None,
            lifetime=dt.timedelta(hours=1), now=dt.datetime.now(dt.UTC),
        )  # fmt: skip
