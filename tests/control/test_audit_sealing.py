"""Personal data in the append-only audit log is erasable (issue 18): sealed under its data
subject's key, readable while the key exists, `[erased]` once it is destroyed, with the
rows and their hash chain unchanged. Ends with the Done-when scan: after a candidate's
erasure, neither their email nor their IP address is readable anywhere."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import ipaddress
import json
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from control import appkeys
from control.app import create_app
from control.audit import store as audit
from control.audit.actions import ActorType, AuditAction
from control.audit.sealing import open_fields, row_aad, seal, seal_fields
from control.audit.store import Actor
from control.audit.verification import verify_chains
from control.db import migrate
from control.db.schema import audit_events
from control.email.sender import OutboxSender, read_outbox
from control.retention.erasure import anonymise_tenant
from control.retention.worker import RetentionWorker
from core.settings import Settings
from tests.factories import OPERATOR, bearer, fake_anthropic_key, make_tenant
from tests.scan import database_text

# What these tests check depends on the database: they run on SQLite and PostgreSQL.
pytestmark = pytest.mark.both_databases

DAYS = dt.timedelta(days=1)
MEMBER_UA = "StaffBrowser/41.7 (unique-member-agent)"


async def _raw_audit_text(engine: AsyncEngine) -> str:
    async with engine.connect() as conn:
        return "\n".join(repr(tuple(r)) for r in await conn.execute(select(audit_events)))


async def test_no_personal_field_is_stored_in_the_clear(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine, "Quiet Harbour Recruiting")
    member = Actor(ActorType.MEMBER, tenant.owner_id, ip="198.51.100.23", user_agent=MEMBER_UA)
    async with engine.begin() as conn:
        await audit.record(
            conn, member, AuditAction.AUTH_HANDOFF, tenant_id=tenant.tenant_id,
            details={"note": "wrote to boss@quiet.example"},
            personal={"subject": "idp|user-8812"},
            subject=audit.subject_of("member", tenant.owner_id),
        )  # fmt: skip
    stored = await _raw_audit_text(engine)
    for personal in ("Quiet Harbour", "198.51.100.23", "unique-member-agent", "idp|user-8812",
                     "boss@quiet.example"):  # fmt: skip
        assert personal not in stored
    async with engine.connect() as conn:
        events = await audit.list_events(conn, tenant.tenant_id, limit=10)
    handoff, created = events[0], events[-1]
    assert (handoff.ip, handoff.user_agent) == ("198.51.100.23", MEMBER_UA)
    assert handoff.details == {"note": "wrote to [redacted:email]", "subject": "idp|user-8812"}
    assert created.action == "tenant:create"
    assert created.details == {"name": "Quiet Harbour Recruiting"}


async def test_anonymising_a_tenant_erases_its_name_and_its_members_fields(
    engine: AsyncEngine,
) -> None:
    tenant = await make_tenant(engine, "Quiet Harbour Recruiting")
    other = await make_tenant(engine, "Loud Harbour Hiring")
    for who in (tenant, other):
        member = Actor(ActorType.MEMBER, who.owner_id, ip="198.51.100.23", user_agent=MEMBER_UA)
        async with engine.begin() as conn:
            await audit.record(conn, member, AuditAction.KEY_UPLOAD, tenant_id=who.tenant_id)
    async with engine.begin() as conn:
        assert await anonymise_tenant(conn, tenant.tenant_id, now=dt.datetime.now(dt.UTC))
    async with engine.connect() as conn:
        erased = await audit.list_events(conn, tenant.tenant_id, limit=10)
        kept = await audit.list_events(conn, other.tenant_id, limit=10)
    by_action = {e.action: e for e in erased}
    assert by_action["tenant:create"].details == {"name": "[erased]"}
    assert (by_action["key:upload"].ip, by_action["key:upload"].user_agent) == (
        "[erased]",
        "[erased]",
    )
    assert {e.action: e for e in kept}["tenant:create"].details == {"name": "Loud Harbour Hiring"}
    assert {e.action: e for e in kept}["key:upload"].ip == "198.51.100.23"
    # The rows never changed: every chain still verifies.
    assert all(r.broken is None for r in await verify_chains(engine))


def test_a_sealed_field_moved_to_another_row_does_not_open() -> None:
    key = bytes(range(32))
    sealed = seal_fields(key, {"ip": "198.51.100.23"}, row_aad("t1", 4, "actor"))
    assert open_fields(key, sealed, row_aad("t1", 4, "actor")) == {"ip": "198.51.100.23"}
    assert open_fields(key, sealed, row_aad("t1", 5, "actor")) is None
    assert open_fields(key, sealed, row_aad("t2", 4, "actor")) is None
    assert open_fields(key, sealed, row_aad("t1", 4, "details")) is None
    assert open_fields(None, sealed, row_aad("t1", 4, "actor")) is None


async def test_the_migration_seals_existing_rows_then_chains_them(engine: AsyncEngine) -> None:
    """Rows written before 0013 held members' addresses, company names and identity-provider
    ids in the clear; 0013 seals them under new subject keys, then chains every row."""
    await migrate.downgrade(engine, "0012")
    at = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    legacy = [
        ("operator", "cli:root", "tenant:create", "t-old", None, None, {"name": "Old Name Ltd"}),
        ("member", "m-old", "auth:handoff", "t-old", "203.0.113.9", MEMBER_UA,
         {"subject": "idp|legacy-77", "expires_at": "2026-05-02"}),
        ("system", "retention", "key:status", "t-old", "10.1.2.3", "worker", {"to": "valid"}),
    ]  # fmt: skip
    async with engine.begin() as conn:
        for actor_type, actor_id, action, tenant_id, ip, agent, details in legacy:
            await conn.execute(
                text(
                    "INSERT INTO audit_events (occurred_at, tenant_id, actor_type, actor_id, "
                    "action, outcome, ip, user_agent, details) VALUES (:at, :tenant, :type, "
                    ":actor, :action, 'success', :ip, :agent, :details)"
                ),
                {"at": at if conn.dialect.name == "postgresql" else at.replace(tzinfo=None),
                 "tenant": tenant_id, "type": actor_type, "actor": actor_id, "action": action,
                 "ip": ip, "agent": agent, "details": json.dumps(details, sort_keys=True)},
            )  # fmt: skip
    await migrate.upgrade(engine)
    stored = await _raw_audit_text(engine)
    for personal in ("Old Name Ltd", "203.0.113.9", "unique-member-agent", "idp|legacy-77"):
        assert personal not in stored
    assert "10.1.2.3" in stored  # a service's own address is not personal data
    async with engine.connect() as conn:
        events = {e.action: e for e in await audit.list_events(conn, "t-old", limit=10)}
    assert events["tenant:create"].details == {"name": "Old Name Ltd"}
    assert (events["auth:handoff"].ip, events["auth:handoff"].user_agent) == (
        "203.0.113.9",
        MEMBER_UA,
    )
    assert events["auth:handoff"].details["subject"] == "idp|legacy-77"
    [report] = await verify_chains(engine, "t-old")
    assert (report.broken, report.rows_checked) == (None, 3)


CANDIDATE_IP = "198.51.100.77"
CANDIDATE_EMAIL = "erase.me.completely@example.com"


async def test_after_erasure_no_email_or_address_of_the_candidate_is_readable_anywhere(
    aiohttp_client: Any, settings: Settings, engine: AsyncEngine, log_output: io.StringIO
) -> None:
    trusted = dataclasses.replace(settings, trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    client = await aiohttp_client(create_app(trusted))
    tenant = await make_tenant(engine)
    async with client.post("/v1/keys", json={"api_key": fake_anthropic_key()}, headers=tenant.auth):
        pass
    async with client.post(
        "/v1/invites",
        json={"candidate_email": CANDIDATE_EMAIL, "assessment_name": "Backend"},
        headers=tenant.auth,
    ) as r:
        token = (await r.json())["invite_token"]
    theirs = {"X-Forwarded-For": CANDIDATE_IP, "User-Agent": "CandidateBrowser/3"}
    async with client.post(f"/v1/invites/{token}/accept", headers=theirs) as r:
        accepted = await r.json()
    async with client.post(
        f"/v1/sessions/{accepted['session_id']}/submit",
        headers={**bearer(accepted["sandbox_token"]), **theirs},
    ) as r:
        assert r.status == 200
    me = {**bearer(accepted["candidate_token"]), **theirs}
    async with client.get("/v1/auth/me/export", headers=me) as r:
        assert CANDIDATE_IP in await r.text()  # readable while the candidate exists
    async with client.post("/v1/auth/me/delete-request", headers=me) as r:
        assert r.status == 202
    assert CANDIDATE_EMAIL in await database_text(engine, trusted)

    worker = RetentionWorker(engine, OutboxSender(engine))
    report = await worker.run(dt.datetime.now(dt.UTC) + DAYS)
    assert report.counts["deletion_requests_completed"] == 1
    await client.app[appkeys.access_log].flush()

    # The database (every table, and on SQLite the raw files), the audit log as the
    # customer reads it and exports it, the outbox, and every log line.
    places = {"database": await database_text(engine, trusted)}
    async with client.get("/v1/audit?limit=200&access=include", headers=tenant.auth) as r:
        places["audit"] = await r.text()
    async with client.get("/v1/audit/export", headers=tenant.auth) as r:
        places["audit export"] = await r.text()
    places["outbox"] = json.dumps(await read_outbox(engine, OPERATOR), default=str)
    places["logs"] = log_output.getvalue()
    for place, found in places.items():
        assert CANDIDATE_EMAIL not in found, place
        assert CANDIDATE_IP not in found, place
        if place != "logs":  # the test client's own access log names user agents
            assert "CandidateBrowser" not in found, place
    assert "[erased]" in places["audit"]  # the rows are there, their fields unreadable


async def test_a_candidates_address_sealed_before_0013_opens_until_they_are_erased(
    engine: AsyncEngine,
) -> None:
    """Rows from before 0.3 sealed a candidate's address under the key on their row; they
    stay as they were, are read through that key, and read `[erased]` once it is gone."""
    await migrate.downgrade(engine, "0012")
    key = bytes(range(32))
    at = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    stored_at = at if engine.dialect.name == "postgresql" else at.replace(tzinfo=None)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO candidates (id, email, created_at, erasure_key) "
                "VALUES ('c-old', 'old@example.com', :at, :key)"
            ),
            {"at": stored_at, "key": key},
        )
        await conn.execute(
            text(
                "INSERT INTO audit_events (occurred_at, tenant_id, actor_type, action, outcome, "
                "candidate_id, candidate_id_text, ip_sealed, user_agent_sealed, details) "
                "VALUES (:at, 't-old', 'candidate', 'invite:accept', 'success', 'c-old', "
                "'c-old', :ip, :agent, '{}')"
            ),
            {"at": stored_at, "ip": seal(key, "198.51.100.5"), "agent": seal(key, "OldBrowser/1")},
        )
    await migrate.upgrade(engine)
    async with engine.connect() as conn:
        [event] = await audit.list_events(conn, "t-old", limit=10)
    assert (event.ip, event.user_agent) == ("198.51.100.5", "OldBrowser/1")
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM candidates WHERE id = 'c-old'"))
    async with engine.connect() as conn:
        [event] = await audit.list_events(conn, "t-old", limit=10)
    assert (event.ip, event.user_agent) == ("[erased]", "[erased]")
    [report] = await verify_chains(engine, "t-old")
    assert report.broken is None  # the hard-delete's SET NULL changed nothing the chain covers
