"""GET /v1/audit: newest first, cursor pagination, filters by action and time; and the
access rows every member or operator request leaves (issue 18)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from control import appkeys
from control.audit import store as audit
from control.audit.access import Access, AccessLog, AccessLogUnavailable
from control.audit.actions import AuditAction
from control.db.engine import create_engine
from control.tenants.operators import create_operator
from core.settings import parse_database_url
from tests.factories import OPERATOR, bearer, make_tenant

# What these tests check depends on the database: they run on SQLite and PostgreSQL.
pytestmark = pytest.mark.both_databases

BASE = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


async def _seed(engine: AsyncEngine, tenant_id: str, n: int) -> None:
    async with engine.begin() as conn:
        for i in range(n):
            action = AuditAction.KEY_UPLOAD if i % 2 else AuditAction.KEY_REVOKE
            await audit.record(
                conn, OPERATOR, action, tenant_id=tenant_id, target_id=f"t{i}",
                now=BASE + dt.timedelta(hours=i),
            )  # fmt: skip


async def test_pages_walk_every_event_newest_first_exactly_once(
    client: Any, engine: AsyncEngine
) -> None:
    tenant = await make_tenant(engine)
    await _seed(engine, tenant.tenant_id, 7)
    seen: list[int] = []
    cursor = ""
    while True:
        async with client.get(f"/v1/audit?limit=3{cursor}", headers=tenant.auth) as r:
            page = await r.json()
        seen += [e["id"] for e in page["events"]]
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert len(seen) == 9  # 7 seeded + tenant:create + member:create
    assert seen == sorted(seen, reverse=True)


async def test_filters_by_action_and_time(client: Any, engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    await _seed(engine, tenant.tenant_id, 6)
    since = (BASE + dt.timedelta(hours=2)).isoformat()
    until = (BASE + dt.timedelta(hours=5)).isoformat()
    query = {"action": "key:upload", "since": since, "until": until}
    async with client.get("/v1/audit", params=query, headers=tenant.auth) as r:
        events = (await r.json())["events"]
    assert [e["target_id"] for e in events] == ["t3"]
    async with client.get(
        "/v1/audit", params={"since": since, "until": until}, headers=tenant.auth
    ) as r:
        assert [e["target_id"] for e in (await r.json())["events"]] == ["t4", "t3", "t2"]


async def _access_rows(client: Any, tenant: Any) -> list[dict[str, Any]]:
    await client.app[appkeys.access_log].flush()
    async with client.get("/v1/audit?access=only", headers=tenant.auth) as r:
        assert r.status == 200
        return list((await r.json())["events"])


async def test_every_member_request_leaves_an_access_row(client: Any, engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    reader = {**tenant.auth, "User-Agent": "ReviewerBrowser/3"}
    async with client.get("/v1/keys", headers=reader) as r:
        assert r.status == 200
    async with client.get("/v1/sessions/no-such-session", headers=reader) as r:
        assert r.status == 404
    async with client.post("/v1/keys", json={"api_key": "nope"}, headers=reader) as r:
        assert r.status == 422
    rows = await _access_rows(client, tenant)
    by_route = {(e["details"]["method"], e["details"]["route"]): e for e in rows}
    keys = by_route[("GET", "/v1/keys")]
    assert (keys["action"], keys["outcome"]) == ("api:read", "success")
    assert keys["details"]["status"] == 200
    assert (keys["actor_type"], keys["actor_id"]) == ("member", tenant.owner_id)
    assert (keys["ip"], keys["user_agent"]) == ("127.0.0.1", "ReviewerBrowser/3")
    missing = by_route[("GET", "/v1/sessions/{session_id}")]
    assert (missing["outcome"], missing["details"]["status"]) == ("failure", 404)
    assert missing["details"]["params"] == {"session_id": "no-such-session"}
    refused = by_route[("POST", "/v1/keys")]
    assert (refused["action"], refused["details"]["status"]) == ("api:write", 422)


async def test_access_rows_are_filtered_out_by_default_and_in_on_request(
    client: Any, engine: AsyncEngine
) -> None:
    tenant = await make_tenant(engine)
    async with client.get("/v1/members", headers=tenant.auth) as r:
        assert r.status == 200
    await client.app[appkeys.access_log].flush()
    async with client.get("/v1/audit", headers=tenant.auth) as r:
        default = {e["action"] for e in (await r.json())["events"]}
    async with client.get("/v1/audit?access=exclude", headers=tenant.auth) as r:
        excluded = {e["action"] for e in (await r.json())["events"]}
    async with client.get("/v1/audit?access=include", headers=tenant.auth) as r:
        included = {e["action"] for e in (await r.json())["events"]}
    assert default == excluded == {"tenant:create", "member:create"}
    assert included == {"tenant:create", "member:create", "api:read"}
    async with client.get("/v1/audit?access=sometimes", headers=tenant.auth) as r:
        assert r.status == 422


async def test_a_refused_role_and_an_operator_read_are_recorded(
    client: Any, engine: AsyncEngine
) -> None:
    tenant = await make_tenant(engine)
    async with client.post(
        "/v1/members", json={"email": "rev@example.com", "role": "reviewer"}, headers=tenant.auth
    ) as r:
        reviewer = await r.json()
    async with client.get("/v1/audit", headers=bearer(reviewer["token"])) as r:
        assert r.status == 403
    operator = await create_operator(engine, OPERATOR, email="ops@metrux.example")
    as_operator = {**bearer(operator["operator_token"]), "X-Metrux-Tenant": tenant.tenant_id}
    async with client.get("/v1/keys", headers=as_operator) as r:
        assert r.status == 200
    rows = await _access_rows(client, tenant)
    refused = next(e for e in rows if e["actor_id"] == reviewer["id"])
    assert (refused["details"]["route"], refused["details"]["status"]) == ("/v1/audit", 403)
    read = next(e for e in rows if e["actor_type"] == "operator")
    assert read["actor_id"] == f"operator:{operator['operator_id']}"
    assert read["details"]["route"] == "/v1/keys"


async def test_access_rows_wait_for_a_batch_and_none_is_dropped(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    access_log = AccessLog(engine, batch=2, max_pending=50)  # not started: no timer
    for n in range(5):
        await access_log.note(_access(tenant.tenant_id, n))
    assert access_log.pending == 5
    async with engine.connect() as conn:
        before = await audit.list_events(conn, tenant.tenant_id, limit=50, access="only")
    assert before == []  # nothing written on the request path
    assert await access_log.flush() == 5
    await access_log.close()
    async with engine.connect() as conn:
        after = await audit.list_events(conn, tenant.tenant_id, limit=50, access="only")
    assert sorted(e.details["params"]["n"] for e in after) == [str(n) for n in range(5)]


async def test_a_full_access_log_the_database_refuses_fails_the_request(
    engine: AsyncEngine,
) -> None:
    tenant = await make_tenant(engine)
    dead = create_engine(parse_database_url(DEAD_DATABASE))
    access_log = AccessLog(dead, max_pending=3)
    await access_log.note(_access(tenant.tenant_id, 0))
    await access_log.note(_access(tenant.tenant_id, 1))
    with pytest.raises(AccessLogUnavailable):
        await access_log.note(_access(tenant.tenant_id, 2))
    assert access_log.pending == 3  # kept, to be written once the database answers
    await dead.dispose()


DEAD_DATABASE = "postgresql://metrux@127.0.0.1:9/none"


def _access(tenant_id: str, n: int) -> Access:
    return Access(
        tenant_id=tenant_id,
        actor=OPERATOR,
        method="GET",
        route="/v1/keys",
        params={"n": str(n)},
        status=200,
        at=dt.datetime.now(dt.UTC),
    )
