"""The privacy lifecycle: retention with an injected clock, candidate export and deletion,
tenant closure, and operators' audited cross-tenant reads; on SQLite and Postgres."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from control import appkeys
from control.audit import store as audit_store
from control.audit.actions import ActorType, AuditAction
from control.audit.store import Actor
from control.candidates import service as candidate_service
from control.db.schema import audit_events, candidates, members, sessions, tenants, usage_records
from control.email.sender import Email, OutboxSender, read_outbox
from control.invites.store import ERASED_EMAIL
from control.retention.rules import render_markdown
from control.retention.worker import RetentionWorker
from control.sessions import service as session_service
from control.sessions.lifecycle import SessionEvent
from control.tenants.operators import create_operator
from control.tenants.service import close_tenant
from control.usage import store as usage_store
from core.crypto.sealing import Recipient
from core.settings import Settings
from tests.control.test_usage_ingest import record
from tests.factories import OPERATOR, TenantFixture, bearer, fake_anthropic_key, make_tenant
from tests.scan import database_text

# What these tests check depends on the database: they run on SQLite and PostgreSQL.
pytestmark = pytest.mark.both_databases

DAYS = dt.timedelta(days=1)


@dataclasses.dataclass
class Accepted:
    session_id: str
    candidate_token: str
    bootstrap_token: str
    sandbox_token: str


async def tenant_with_key(client: Any, engine: AsyncEngine, name: str = "Acme") -> TenantFixture:
    tenant = await make_tenant(engine, name)
    async with client.post(
        "/v1/keys", json={"api_key": fake_anthropic_key()}, headers=tenant.auth
    ) as r:
        assert r.status == 201
    return tenant


async def invite_and_accept(
    client: Any, tenant: TenantFixture, email: str, user_agent: str = "test-agent"
) -> Accepted:
    async with client.post(
        "/v1/invites",
        json={"candidate_email": email, "assessment_name": "Backend"},
        headers=tenant.auth,
    ) as r:
        assert r.status == 201
        token = (await r.json())["invite_token"]
    async with client.post(f"/v1/invites/{token}/accept", headers={"User-Agent": user_agent}) as r:
        assert r.status == 201
        body = await r.json()
    # The platform, not the candidate, gets the proxy's attach credential.
    async with client.post(
        f"/v1/sessions/{body['session_id']}/bootstrap-token", headers=tenant.auth
    ) as r:
        bootstrap = (await r.json())["bootstrap_token"]
    return Accepted(body["session_id"], body["candidate_token"], bootstrap, body["sandbox_token"])


async def end_at(
    client: Any, engine: AsyncEngine, tenant: TenantFixture, session_id: str, when: dt.datetime
) -> None:
    await session_service.transition(
        engine,
        client.app[appkeys.signals],
        OPERATOR,
        tenant_id=tenant.tenant_id,
        session_id=session_id,
        event=SessionEvent.END,
        now=when,
    )


def worker(engine: AsyncEngine) -> RetentionWorker:
    return RetentionWorker(engine, OutboxSender(engine), batch=2)  # small: batches are exercised


async def status_of(client: Any, tenant: TenantFixture, path: str) -> int:
    async with client.get(path, headers=tenant.auth) as r:
        return r.status


async def test_sessions_are_soft_then_hard_deleted_on_schedule(
    client: Any, engine: AsyncEngine
) -> None:
    tenant = await tenant_with_key(client, engine)
    now = dt.datetime.now(dt.UTC)
    ages = {}
    for days in (179, 181, 211):
        accepted = await invite_and_accept(client, tenant, f"c{days}@example.com")
        await end_at(client, engine, tenant, accepted.session_id, now - days * DAYS)
        ages[days] = accepted.session_id
    async with engine.begin() as conn:
        await usage_store.insert_records(conn, [record(ages[211]), record(ages[181])], now=now)

    report = await worker(engine).run(now)
    assert report.counts["sessions_soft_deleted"] == 2  # 181 and 211 days
    assert report.counts["sessions_hard_deleted"] == 1  # 211 days

    assert await status_of(client, tenant, f"/v1/sessions/{ages[179]}") == 200
    for days in (181, 211):
        assert await status_of(client, tenant, f"/v1/sessions/{ages[days]}") == 404
        assert await status_of(client, tenant, f"/v1/sessions/{ages[days]}/usage") == 404
    async with engine.connect() as conn:
        kept = {r.id: r for r in await conn.execute(select(sessions))}
        usage = {r.session_id for r in await conn.execute(select(usage_records))}
        rows = list(
            await conn.execute(
                select(audit_events).where(audit_events.c.session_id_text == ages[211])
            )
        )
    assert kept[ages[179]].soft_deleted_at is None
    assert kept[ages[181]].soft_deleted_at == now  # soft: still stored, hidden
    assert ages[211] not in kept  # hard: gone, with its usage records
    assert usage == {ages[181]}
    assert rows, "the hard-deleted session had audit rows"
    assert all(r.session_id is None and r.session_id_text == ages[211] for r in rows)

    async with client.get(
        "/v1/audit?action=retention:sessions_soft_delete,retention:sessions_hard_delete",
        headers=tenant.auth,
    ) as r:
        events = (await r.json())["events"]
    assert sorted((e["action"], e["details"]["count"]) for e in events) in (
        [("retention:sessions_hard_delete", 1), ("retention:sessions_soft_delete", 2)],
        [
            ("retention:sessions_hard_delete", 1),
            ("retention:sessions_soft_delete", 1),
            ("retention:sessions_soft_delete", 1),
        ],
    )
    again = await worker(engine).run(now)  # idempotent
    assert not any(again.counts.values())


async def test_unaccepted_invites_lose_their_address_30_days_after_expiry(
    client: Any, engine: AsyncEngine, settings: Settings
) -> None:
    tenant = await tenant_with_key(client, engine)
    for email in ("never@example.com", "taken@example.com"):
        async with client.post(
            "/v1/invites",
            json={"candidate_email": email, "assessment_name": "Backend", "expires_in_hours": 24},
            headers=tenant.auth,
        ) as r:
            assert r.status == 201
            token = (await r.json())["invite_token"]
    async with client.post(f"/v1/invites/{token}/accept") as r:  # the second one is accepted
        assert r.status == 201
    expired = dt.datetime.now(dt.UTC) + DAYS
    report = await worker(engine).run(expired + 29 * DAYS)
    assert report.counts["invite_emails_erased"] == 0
    report = await worker(engine).run(expired + 31 * DAYS)
    assert report.counts["invite_emails_erased"] == 1
    async with client.get("/v1/invites", headers=tenant.auth) as r:
        listed = {i["candidate_email"] for i in (await r.json())["invites"]}
    assert listed == {ERASED_EMAIL, "taken@example.com"}
    await read_outbox(engine, OPERATOR)  # hand the invite emails over, as an operator would
    await worker(engine).run(expired + 32 * DAYS)  # and purge them
    assert "never@example.com" not in await database_text(engine, settings)
    assert (await worker(engine).run(expired + 33 * DAYS)).counts["invite_emails_erased"] == 0


async def test_the_outbox_is_purged_after_delivery_or_30_days(
    client: Any, engine: AsyncEngine
) -> None:
    sender = OutboxSender(engine)
    now = dt.datetime.now(dt.UTC)
    await sender.send(Email("first@example.com", "one", "body one"))
    assert [m["to_email"] for m in await read_outbox(engine, OPERATOR)] == ["first@example.com"]
    await sender.send(Email("second@example.com", "two", "body two"))
    report = await worker(engine).run(now)
    assert (
        report.counts["outbox_delivered_deleted"],
        report.counts["outbox_undelivered_deleted"],
    ) == (1, 0)
    report = await worker(engine).run(now + 31 * DAYS)
    assert (
        report.counts["outbox_delivered_deleted"],
        report.counts["outbox_undelivered_deleted"],
    ) == (0, 1)
    assert await read_outbox(engine, OPERATOR) == []


async def test_a_dry_run_counts_and_changes_nothing(client: Any, engine: AsyncEngine) -> None:
    tenant = await tenant_with_key(client, engine)
    now = dt.datetime.now(dt.UTC)
    accepted = await invite_and_accept(client, tenant, "old@example.com")
    await end_at(client, engine, tenant, accepted.session_id, now - 300 * DAYS)
    report = await worker(engine).run(now, dry_run=True)
    assert report.as_json()["counts"]["sessions_hard_deleted"] == 1
    assert await status_of(client, tenant, f"/v1/sessions/{accepted.session_id}") == 200


async def test_an_inactive_candidate_is_noticed_then_deleted(
    client: Any, engine: AsyncEngine
) -> None:
    tenant = await tenant_with_key(client, engine)
    start = dt.datetime.now(dt.UTC)
    accepted = await invite_and_accept(client, tenant, "idle@example.com")

    assert (await worker(engine).run(start + 729 * DAYS)).counts["candidate_notices_sent"] == 0
    noticed = start + 731 * DAYS
    assert (await worker(engine).run(noticed)).counts["candidate_notices_sent"] == 1
    assert (await worker(engine).run(noticed + DAYS)).counts["candidate_notices_sent"] == 0
    notices = [m for m in await read_outbox(engine, OPERATOR) if "will be deleted" in m["subject"]]
    assert [m["to_email"] for m in notices] == ["idle@example.com"]

    assert (await worker(engine).run(noticed + 29 * DAYS)).counts[
        "candidates_deleted_inactive"
    ] == 0
    done = await worker(engine).run(noticed + 31 * DAYS)
    assert done.counts["candidates_deleted_inactive"] == 1
    async with client.get("/v1/auth/me", headers=bearer(accepted.candidate_token)) as r:
        assert r.status == 401
    assert "idle@example.com" not in await database_text(engine, client.app[appkeys.settings])


async def test_signing_in_during_the_notice_window_cancels_it(
    client: Any, engine: AsyncEngine
) -> None:
    tenant = await tenant_with_key(client, engine)
    start = dt.datetime.now(dt.UTC)
    accepted = await invite_and_accept(client, tenant, "back@example.com")
    noticed = start + 731 * DAYS
    await worker(engine).run(noticed)
    async with client.get("/v1/auth/me", headers=bearer(accepted.candidate_token)) as r:
        assert r.status == 200
        assert (await r.json())["deletion_notice_at"] is None  # signing in cleared it
    # The sign-in, on the test's clock, happens inside the window.
    await candidate_service.sign_in(engine, accepted.candidate_token, noticed + 10 * DAYS)
    report = await worker(engine).run(noticed + 40 * DAYS)
    assert report.counts["candidates_deleted_inactive"] == 0
    assert report.counts["candidate_notices_sent"] == 0
    async with client.get("/v1/auth/me", headers=bearer(accepted.candidate_token)) as r:
        assert r.status == 200


async def test_export_holds_exactly_the_candidates_data(client: Any, engine: AsyncEngine) -> None:
    tenant = await tenant_with_key(client, engine)
    mine = await invite_and_accept(client, tenant, "me@example.com", user_agent="MyBrowser/1")
    theirs = await invite_and_accept(client, tenant, "them@example.com")
    async with client.post(
        f"/internal/v1/sessions/{mine.session_id}/attach",
        json=Recipient().as_json(),
        headers=bearer(mine.bootstrap_token),
    ) as r:
        assert r.status == 200
    async with engine.begin() as conn:
        await usage_store.insert_records(
            conn,
            [record(mine.session_id), record(theirs.session_id)],
            now=dt.datetime.now(dt.UTC),
        )

    async with client.get("/v1/auth/me/export", headers=bearer(mine.candidate_token)) as r:
        assert r.status == 200
        text = await r.text()
        export = await r.json()
    assert export["candidate"]["email"] == "me@example.com"
    assert [s["id"] for s in export["sessions"]] == [mine.session_id]
    assert [u["session_id"] for u in export["usage_records"]] == [mine.session_id]
    assert {e["action"] for e in export["audit_events"]} >= {
        "invite:accept",
        "session:create",
        "key:unwrap",
    }
    [unwrap] = export["key_unwraps"]
    assert unwrap["session_id"] == mine.session_id
    accept = next(e for e in export["audit_events"] if e["action"] == "invite:accept")
    assert accept["actor"] == {"type": "you", "ip": "127.0.0.1", "user_agent": "MyBrowser/1"}
    assert [i["assessment_name"] for i in export["invites"]] == ["Backend"]
    for foreign in ("them@example.com", theirs.session_id, theirs.candidate_token):
        assert foreign not in text
    async with client.get("/v1/auth/me/export") as r:
        assert r.status == 401
    async with client.get("/v1/auth/me/export", headers=tenant.auth) as r:
        assert r.status == 401  # a member token is not a candidate token


async def test_the_export_names_staff_by_role_only(client: Any, engine: AsyncEngine) -> None:
    """A member's id, address, user agent and anything personal in details, planted in an
    event about the candidate, stay out of the candidate's export."""
    tenant = await tenant_with_key(client, engine)
    mine = await invite_and_accept(client, tenant, "me@example.com")
    async with client.get("/v1/auth/me", headers=bearer(mine.candidate_token)) as r:
        candidate_id = (await r.json())["id"]
    staff = Actor(
        ActorType.MEMBER, tenant.owner_id, ip="203.0.113.77", user_agent="StaffBrowser/9.1"
    )
    async with engine.begin() as conn:
        await audit_store.record(
            conn,
            staff,
            AuditAction.SESSION_END,
            tenant_id=tenant.tenant_id,
            session_id=mine.session_id,
            candidate_id=candidate_id,
            details={"reason": "ended by staff", "note": "staff@corp.example", "subject": "idp|9"},
        )
    async with client.get("/v1/auth/me/export", headers=bearer(mine.candidate_token)) as r:
        text = await r.text()
        export = await r.json()
    ended = next(e for e in export["audit_events"] if e["action"] == "session:end")
    assert ended["actor"] == {"type": "company staff", "role": "owner"}
    assert ended["details"] == {"reason": "ended by staff"}
    for staff_data in (tenant.owner_id, "203.0.113.77", "StaffBrowser", "staff@corp", "idp|9"):
        assert staff_data not in text


async def test_a_deletion_request_leaves_nothing_personal(
    client: Any, engine: AsyncEngine, settings: Settings
) -> None:
    tenant = await tenant_with_key(client, engine)
    email, agent = "leaving@example.com", "LeavingBrowser/7.3 (unique-ua-4711)"
    accepted = await invite_and_accept(client, tenant, email, user_agent=agent)
    async with client.post(
        f"/v1/sessions/{accepted.session_id}/submit",
        headers={**bearer(accepted.sandbox_token), "User-Agent": agent},
    ) as r:
        assert r.status == 200
    async with engine.begin() as conn:
        await usage_store.insert_records(
            conn, [record(accepted.session_id)], now=dt.datetime.now(dt.UTC)
        )
    assert email in await database_text(engine, settings)

    headers = {**bearer(accepted.candidate_token), "User-Agent": agent}
    async with client.post("/v1/auth/me/delete-request", headers=headers) as r:
        assert r.status == 202
        request = await r.json()
    requested = dt.datetime.fromisoformat(request["requested_at"])
    assert dt.datetime.fromisoformat(request["due_at"]) == requested + 30 * DAYS
    async with client.post("/v1/auth/me/delete-request", headers=headers) as r:
        assert (await r.json())["id"] == request["id"]  # a repeat gets the open request

    report = await worker(engine).run(requested + DAYS)
    assert report.counts["deletion_requests_completed"] == 1

    stored = await database_text(engine, settings)
    assert email not in stored
    assert agent not in stored
    async with engine.connect() as conn:
        assert list(await conn.execute(select(candidates))) == []
        rows = list(
            await conn.execute(select(audit_events).where(audit_events.c.actor_type == "candidate"))
        )
        [session] = list(await conn.execute(select(sessions)))
        kept_usage = list(await conn.execute(select(usage_records)))
    # The candidate's own requests are in the log, their IP and agent unreadable for good.
    assert len(rows) >= 3
    assert all(r.ip is None and r.user_agent is None for r in rows)
    async with client.get("/v1/audit?limit=200", headers=tenant.auth) as r:
        events = (await r.json())["events"]
    assert all(
        e["ip"] == e["user_agent"] == "[erased]" for e in events if e["actor_type"] == "candidate"
    )
    assert "candidate:erase" in {e["action"] for e in events}
    assert session.candidate_id is None  # the customer keeps de-identified counts
    assert len(kept_usage) == 1
    async with client.get("/v1/auth/me", headers=bearer(accepted.candidate_token)) as r:
        assert r.status == 401


async def test_two_workers_at_once_do_what_one_would(client: Any, engine: AsyncEngine) -> None:
    tenant = await tenant_with_key(client, engine)
    now = dt.datetime.now(dt.UTC)
    for n in range(5):
        accepted = await invite_and_accept(client, tenant, f"old{n}@example.com")
        await end_at(client, engine, tenant, accepted.session_id, now - (200 + 10 * n) * DAYS)
    leaving = await invite_and_accept(client, tenant, "bye@example.com")
    async with client.post(
        "/v1/auth/me/delete-request", headers=bearer(leaving.candidate_token)
    ) as r:
        assert r.status == 202
    later = now + 800 * DAYS  # every candidate inactive, every session past both limits

    reports = await asyncio.gather(worker(engine).run(later), worker(engine).run(later))
    combined = reports[0].counts + reports[1].counts
    # Exactly what one worker would have done: six sessions (the unended one is over at its
    # deadline), one request carried out, five notices (whoever asked to be deleted gets
    # none, whichever worker gets there first).
    assert combined == {
        "sessions_soft_deleted": 6,
        "sessions_hard_deleted": 6,
        "deletion_requests_completed": 1,
        "candidate_notices_sent": 5,
        "outbox_undelivered_deleted": 5,  # the invite emails, undelivered for 800 days
    }
    notices = [m for m in await read_outbox(engine, OPERATOR) if "will be deleted" in m["subject"]]
    assert sorted(m["to_email"] for m in notices) == [f"old{n}@example.com" for n in range(5)]
    # Nothing is left to do but purge the notices just handed over.
    assert (await worker(engine).run(later)).counts == {"outbox_delivered_deleted": 5}
    assert not any((await worker(engine).run(later)).counts.values())
    assert "bye@example.com" not in await database_text(engine, client.app[appkeys.settings])


async def test_closing_a_tenant_destroys_keys_now_and_anonymises_later(
    client: Any, engine: AsyncEngine, settings: Settings
) -> None:
    tenant = await tenant_with_key(client, engine, "Closing Co")
    other = await tenant_with_key(client, engine, "Staying Co")
    accepted = await invite_and_accept(client, tenant, "cand@example.com")
    closed = await close_tenant(
        engine, client.app[appkeys.key_revocation], OPERATOR, tenant_id=tenant.tenant_id
    )
    assert closed["keys_destroyed"] == 1
    assert await status_of(client, tenant, "/v1/keys") == 401  # members are out
    async with client.get(f"/v1/sessions/{accepted.session_id}", headers=other.auth) as r:
        assert r.status == 404
    async with engine.connect() as conn:
        [state] = (await conn.execute(select(sessions.c.state))).one()
    assert state == "revoked"

    now = dt.datetime.now(dt.UTC)
    assert (await worker(engine).run(now + 29 * DAYS)).counts["tenants_anonymised"] == 0
    assert (await worker(engine).run(now + 31 * DAYS)).counts["tenants_anonymised"] == 1
    async with engine.connect() as conn:
        names = {r.id: r.name for r in await conn.execute(select(tenants))}
        emails = {r.email for r in await conn.execute(select(members))}
    assert names[tenant.tenant_id] == "anonymised tenant"
    assert names[other.tenant_id] == "Staying Co"
    assert tenant.owner_email not in emails
    assert other.owner_email in emails
    stored = await database_text(engine, settings)
    assert tenant.owner_email not in stored
    assert ERASED_EMAIL in stored  # the invite's candidate email is gone
    assert await status_of(client, other, "/v1/keys") == 200


async def test_operator_reads_are_audited_in_the_tenants_log(
    client: Any, engine: AsyncEngine
) -> None:
    tenant = await tenant_with_key(client, engine)
    other = await tenant_with_key(client, engine, "Other")
    accepted = await invite_and_accept(client, tenant, "seen@example.com")
    operator = await create_operator(engine, OPERATOR, email="ops@metrux.example")
    as_operator = {**bearer(operator["operator_token"]), "X-Metrux-Tenant": tenant.tenant_id}

    async with client.get(f"/v1/sessions/{accepted.session_id}", headers=as_operator) as r:
        assert r.status == 200
    async with client.get("/v1/audit?action=operator:read", headers=tenant.auth) as r:
        [event] = (await r.json())["events"]
    assert event["actor_type"] == "operator"
    assert event["actor_id"] == f"operator:{operator['operator_id']}"
    assert event["details"] == {"method": "GET", "path": f"/v1/sessions/{accepted.session_id}"}
    async with client.get("/v1/audit?action=operator:read", headers=other.auth) as r:
        assert (await r.json())["events"] == []  # nothing in the tenant not read

    # Reads only, one tenant at a time, and tenant isolation still holds.
    async with client.post(f"/v1/sessions/{accepted.session_id}/end", headers=as_operator) as r:
        assert r.status == 403
    async with client.get("/v1/keys", headers=bearer(operator["operator_token"])) as r:
        assert r.status == 400
    other_view = {**as_operator, "X-Metrux-Tenant": other.tenant_id}
    async with client.get(f"/v1/sessions/{accepted.session_id}", headers=other_view) as r:
        assert r.status == 404
    async with client.get("/v1/keys", headers={**as_operator, "X-Metrux-Tenant": "nope"}) as r:
        assert r.status == 404
    async with client.get(
        "/v1/keys", headers={**as_operator, "Authorization": "Bearer mxo_x"}
    ) as r:
        assert r.status == 401


def test_the_retention_doc_is_rendered_from_the_code() -> None:
    doc = Path(__file__).parents[2] / "docs" / "retention.md"
    assert doc.read_text() == render_markdown(), (
        "run: metrux control retention doc > docs/retention.md"
    )
