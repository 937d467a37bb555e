"""GET /v1/audit: newest first, cursor pagination, filters by action and time."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from control.audit import store as audit
from control.audit.actions import AuditAction
from tests.factories import OPERATOR, make_tenant

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
