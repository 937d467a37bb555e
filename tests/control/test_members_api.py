"""Members: tokens shown once and working, role rules, last-owner protection, audit."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.factories import TenantFixture, bearer, make_tenant

# What these tests check depends on the database: they run on SQLite and PostgreSQL.
pytestmark = pytest.mark.both_databases


async def _add(
    client: Any, tenant: TenantFixture, email: str, role: str, as_: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    async with client.post(
        "/v1/members", json={"email": email, "role": role}, headers=as_ or tenant.auth
    ) as r:
        return r.status, await r.json()


async def test_created_member_token_works_and_is_shown_once(
    client: Any, engine: AsyncEngine
) -> None:
    tenant = await make_tenant(engine)
    status, created = await _add(client, tenant, "Ada@Example.com ", "admin")
    assert status == 201
    assert created["email"] == "ada@example.com"
    assert created["role"] == "admin"
    assert created["token"].startswith("mxk_")
    async with client.get("/v1/members", headers=bearer(created["token"])) as r:
        listed = (await r.json())["members"]
    assert r.status == 200
    assert [m["email"] for m in listed][1:] == ["ada@example.com"]
    assert all("token" not in m for m in listed)


async def test_duplicate_active_email_conflicts(client: Any, engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    assert (await _add(client, tenant, "a@example.com", "reviewer"))[0] == 201
    status, body = await _add(client, tenant, "a@example.com", "admin")
    assert status == 409
    assert body["error"]["type"] == "conflict_error"


async def test_admin_cannot_grant_owner_or_revoke_one(client: Any, engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    _, admin = await _add(client, tenant, "admin@example.com", "admin")
    status, body = await _add(
        client, tenant, "boss@example.com", "owner", as_=bearer(admin["token"])
    )
    assert status == 403
    assert body["error"]["type"] == "permission_error"
    async with client.delete(f"/v1/members/{tenant.owner_id}", headers=bearer(admin["token"])) as r:
        assert r.status == 403


async def test_reviewer_cannot_manage_members(client: Any, engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    _, reviewer = await _add(client, tenant, "rev@example.com", "reviewer")
    assert (await _add(client, tenant, "x@example.com", "reviewer", as_=bearer(reviewer["token"])))[
        0
    ] == 403
    async with client.get("/v1/members", headers=bearer(reviewer["token"])) as r:
        assert r.status == 403


async def test_revoked_member_token_stops_working(client: Any, engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    _, admin = await _add(client, tenant, "admin@example.com", "admin")
    async with client.delete(f"/v1/members/{admin['id']}", headers=tenant.auth) as r:
        assert r.status == 200
        assert (await r.json())["revoked_at"] is not None
    async with client.get("/v1/keys", headers=bearer(admin["token"])) as r:
        assert r.status == 401


async def test_last_owner_cannot_be_revoked(client: Any, engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    async with client.delete(f"/v1/members/{tenant.owner_id}", headers=tenant.auth) as r:
        assert r.status == 409
    _, second = await _add(client, tenant, "second@example.com", "owner")
    async with client.delete(
        f"/v1/members/{tenant.owner_id}", headers=bearer(second["token"])
    ) as r:
        assert r.status == 200


async def test_member_changes_are_audited_without_email(client: Any, engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    _, admin = await _add(client, tenant, "audited@example.com", "admin")
    async with client.delete(f"/v1/members/{admin['id']}", headers=tenant.auth):
        pass
    async with client.get("/v1/audit?action=member:create,member:revoke", headers=tenant.auth) as r:
        events = (await r.json())["events"]
    assert [(e["action"], e["target_id"]) for e in events[:2]] == [
        ("member:revoke", admin["id"]),
        ("member:create", admin["id"]),
    ]
    assert "audited@example.com" not in str(events)


async def _role(
    client: Any, tenant: TenantFixture, member_id: str, role: str, as_: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    async with client.patch(
        f"/v1/members/{member_id}", json={"role": role}, headers=as_ or tenant.auth
    ) as r:
        return r.status, await r.json()


async def test_a_role_change_takes_effect_at_once_and_is_audited(
    client: Any, engine: AsyncEngine
) -> None:
    tenant = await make_tenant(engine)
    _, reviewer = await _add(client, tenant, "rev@example.com", "reviewer")
    async with client.get("/v1/members", headers=bearer(reviewer["token"])) as r:
        assert r.status == 403
    status, changed = await _role(client, tenant, reviewer["id"], "admin")
    assert (status, changed["role"]) == (200, "admin")
    async with client.get("/v1/members", headers=bearer(reviewer["token"])) as r:
        assert r.status == 200  # the same token, the new role
    async with client.get("/v1/audit?action=member:role", headers=tenant.auth) as r:
        [event] = (await r.json())["events"]
    assert (event["target_id"], event["details"]) == (
        reviewer["id"],
        {"from": "reviewer", "to": "admin"},
    )
    assert (await _role(client, tenant, reviewer["id"], "owner", bearer(reviewer["token"])))[
        0
    ] == 403


async def test_role_changes_keep_the_rank_rules_and_an_owner(
    client: Any, engine: AsyncEngine
) -> None:
    tenant = await make_tenant(engine)
    _, admin = await _add(client, tenant, "adm@example.com", "admin")
    as_admin = bearer(admin["token"])
    status, body = await _role(client, tenant, tenant.owner_id, "reviewer", as_admin)
    assert (status, body["error"]["type"]) == (403, "permission_error")  # not above you
    status, body = await _role(client, tenant, tenant.owner_id, "admin")
    assert (status, body["error"]["type"]) == (409, "conflict_error")  # the last owner
    assert (await _role(client, tenant, "no-such-member", "admin"))[0] == 404
    async with client.patch(
        f"/v1/members/{admin['id']}", json={"role": "boss"}, headers=tenant.auth
    ) as r:
        assert r.status == 422
    async with client.delete(f"/v1/members/{admin['id']}", headers=tenant.auth):
        pass
    assert (await _role(client, tenant, admin["id"], "reviewer"))[0] == 404  # revoked
