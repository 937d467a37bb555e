"""No route returns or changes another tenant's rows: foreign ids are 404, never 403."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.factories import fake_anthropic_key, make_tenant

# What these tests check depends on the database: they run on SQLite and PostgreSQL.
pytestmark = pytest.mark.both_databases


async def test_foreign_ids_are_not_found_and_unchanged(client: Any, engine: AsyncEngine) -> None:
    alice = await make_tenant(engine, "Alice Co")
    bob = await make_tenant(engine, "Bob Co")
    async with client.post(
        "/v1/keys", json={"api_key": fake_anthropic_key()}, headers=alice.auth
    ) as r:
        alice_key = await r.json()
    async with client.post(
        "/v1/members", json={"email": "m@alice.example", "role": "reviewer"}, headers=alice.auth
    ) as r:
        alice_member = await r.json()

    for method, path in [
        ("GET", f"/v1/keys/{alice_key['id']}"),
        ("DELETE", f"/v1/keys/{alice_key['id']}"),
        ("DELETE", f"/v1/members/{alice_member['id']}"),
        ("DELETE", f"/v1/members/{alice.owner_id}"),
    ]:
        async with client.request(method, path, headers=bob.auth) as r:
            assert r.status == 404, (method, path)
            assert (await r.json())["error"]["type"] == "not_found_error"

    async with client.get(f"/v1/keys/{alice_key['id']}", headers=alice.auth) as r:
        assert (await r.json())["revoked_at"] is None
    async with client.get("/v1/members", headers=alice.auth) as r:
        assert all(m["revoked_at"] is None for m in (await r.json())["members"])


async def test_lists_show_only_the_callers_tenant(client: Any, engine: AsyncEngine) -> None:
    alice = await make_tenant(engine, "Alice Co")
    bob = await make_tenant(engine, "Bob Co")
    async with client.post("/v1/keys", json={"api_key": fake_anthropic_key()}, headers=alice.auth):
        pass
    async with client.get("/v1/keys", headers=bob.auth) as r:
        assert (await r.json())["keys"] == []
    async with client.get("/v1/members", headers=bob.auth) as r:
        assert [m["id"] for m in (await r.json())["members"]] == [bob.owner_id]
    async with client.get("/v1/audit", headers=bob.auth) as r:
        events = (await r.json())["events"]
    assert events
    assert all(e["action"] != "key:upload" for e in events)
    assert {e["target_id"] for e in events} <= {bob.tenant_id, bob.owner_id}
