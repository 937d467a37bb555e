"""The key lifecycle through the HTTP API: upload, list, show, revoke; and the plaintext
key never reaches the database, the logs or any response after the upload."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from control.db.schema import api_keys
from core.settings import Settings
from tests.factories import bearer, fake_anthropic_key, make_tenant
from tests.scan import Recorder, database_text

# What these tests check depends on the database: they run on SQLite and PostgreSQL.
pytestmark = pytest.mark.both_databases


async def test_upload_list_revoke_flow(client: Any, engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    key = fake_anthropic_key()
    api = Recorder(client)

    status, created = await api.call(
        "POST", "/v1/keys", json={"api_key": key, "name": "main"}, headers=tenant.auth
    )
    assert status == 201
    assert set(created) == {
        "id",
        "name",
        "last_four",
        "fingerprint",
        "created_at",
        "created_by",
        "revoked_at",
        "status",
        "status_reason",
        "last_checked_at",
        "last_used_at",
        "live_sessions",
        "is_default",
    }
    # The test app's upstream is a closed port: Anthropic could not be asked.
    assert (created["status"], created["status_reason"]) == ("unverified", "connection_error")
    assert created["is_default"] is True  # the tenant's first key
    assert created["last_four"] == key[-4:]
    assert created["fingerprint"] == "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    assert created["created_by"] == tenant.owner_id
    assert created["revoked_at"] is None

    status, listed = await api.call("GET", "/v1/keys", headers=tenant.auth)
    assert (status, listed) == (200, {"keys": [created]})
    status, shown = await api.call("GET", f"/v1/keys/{created['id']}", headers=tenant.auth)
    assert (status, shown) == (200, created)

    status, revoked = await api.call("DELETE", f"/v1/keys/{created['id']}", headers=tenant.auth)
    assert status == 200
    assert revoked["revoked_at"] is not None
    status, listed = await api.call("GET", "/v1/keys", headers=tenant.auth)
    assert listed["keys"][0]["revoked_at"] == revoked["revoked_at"]

    async with engine.connect() as conn:
        row = (await conn.execute(select(api_keys).where(api_keys.c.id == created["id"]))).one()
    assert (row.kek_id, row.encrypted_data_key, row.nonce, row.ciphertext) == (
        None,
        None,
        None,
        None,
    )


async def test_upload_and_revoke_are_audited_with_actor_ip_and_agent(
    client: Any, engine: AsyncEngine
) -> None:
    tenant = await make_tenant(engine)
    key = fake_anthropic_key()
    headers = {**tenant.auth, "User-Agent": "audit-test/1.0"}
    async with client.post("/v1/keys", json={"api_key": key}, headers=headers) as response:
        key_id = (await response.json())["id"]
    async with client.delete(f"/v1/keys/{key_id}", headers=headers) as response:
        assert response.status == 200
    async with client.get(
        "/v1/audit?action=key:upload,key:revoke", headers=tenant.auth
    ) as response:
        events = (await response.json())["events"]
    assert [e["action"] for e in events] == ["key:revoke", "key:upload"]
    for event in events:
        assert event["actor_type"] == "member"
        assert event["actor_id"] == tenant.owner_id
        assert event["target_id"] == key_id
        assert event["ip"] == "127.0.0.1"
        assert event["user_agent"] == "audit-test/1.0"
        assert event["request_id"]
    assert events[1]["details"]["last_four"] == key[-4:]


async def test_plaintext_key_is_never_stored_logged_or_returned(
    client: Any, engine: AsyncEngine, settings: Settings, log_output: io.StringIO
) -> None:
    """After uploads, lists, a duplicate, a bad upload and a revoke, the key appears in no
    response, no log line and no database byte, in plain text or hex."""
    tenant = await make_tenant(engine)
    key = fake_anthropic_key()
    api = Recorder(client)
    _, created = await api.call("POST", "/v1/keys", json={"api_key": key}, headers=tenant.auth)
    await api.call("POST", "/v1/keys", json={"api_key": key}, headers=tenant.auth)  # duplicate
    await api.call("POST", "/v1/keys", json={"api_key": key + "!"}, headers=tenant.auth)  # bad
    await api.call("POST", "/v1/keys", json={"api_key": key, "extra": key}, headers=tenant.auth)
    await api.call("GET", "/v1/keys", headers=tenant.auth)
    await api.call("GET", "/v1/audit", headers=tenant.auth)
    await api.call("DELETE", f"/v1/keys/{created['id']}", headers=tenant.auth)

    secret_forms = [key, key[13:45], key[-20:], key.encode().hex()]
    stored = await database_text(engine, settings)
    logs = log_output.getvalue()
    assert "POST /v1/keys" in logs  # the access log was captured
    for form in secret_forms:
        assert all(form not in body for body in api.bodies)
        assert form not in logs
        assert form not in stored


async def test_same_key_twice_conflicts_until_revoked(client: Any, engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    key = fake_anthropic_key()
    async with client.post("/v1/keys", json={"api_key": key}, headers=tenant.auth) as response:
        first = await response.json()
    async with client.post("/v1/keys", json={"api_key": key}, headers=tenant.auth) as response:
        assert response.status == 409
        assert (await response.json())["error"]["type"] == "conflict_error"
    async with client.delete(f"/v1/keys/{first['id']}", headers=tenant.auth) as response:
        assert response.status == 200
    async with client.post("/v1/keys", json={"api_key": key}, headers=tenant.auth) as response:
        assert response.status == 201


async def test_revoking_twice_changes_nothing_the_second_time(
    client: Any, engine: AsyncEngine
) -> None:
    tenant = await make_tenant(engine)
    async with client.post(
        "/v1/keys", json={"api_key": fake_anthropic_key()}, headers=tenant.auth
    ) as r:
        key_id = (await r.json())["id"]
    async with client.delete(f"/v1/keys/{key_id}", headers=tenant.auth) as r:
        first = await r.json()
    async with client.delete(f"/v1/keys/{key_id}", headers=tenant.auth) as r:
        assert (r.status, await r.json()) == (200, first)
    async with client.get("/v1/audit?action=key:revoke", headers=tenant.auth) as r:
        assert len((await r.json())["events"]) == 1


async def test_unknown_key_id_is_404(client: Any, engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    for method in ("GET", "DELETE"):
        async with client.request(method, "/v1/keys/no-such-key", headers=tenant.auth) as r:
            assert r.status == 404
            assert (await r.json())["error"]["type"] == "not_found_error"


async def test_admin_keys_and_other_strings_are_refused_with_a_clear_message(
    client: Any, engine: AsyncEngine
) -> None:
    tenant = await make_tenant(engine)
    admin_key = "sk-ant-admin01-" + fake_anthropic_key()[13:]
    cases = {
        admin_key: "Admin API key",
        "sk-proj-" + "a" * 60: "must be an Anthropic API key",
        "": "must be an Anthropic API key",
        fake_anthropic_key() + " trailing words": "must be an Anthropic API key",
    }
    for value, message in cases.items():
        async with client.post("/v1/keys", json={"api_key": value}, headers=tenant.auth) as r:
            body = await r.json()
            assert r.status == 422
            assert message in body["error"]["message"]
            assert value[-20:] not in json.dumps(body) or value == ""
    async with client.get("/v1/keys", headers=tenant.auth) as r:
        assert (await r.json())["keys"] == []


async def test_reviewer_can_list_but_not_upload_or_revoke(client: Any, engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    async with client.post(
        "/v1/members", json={"email": "rev@example.com", "role": "reviewer"}, headers=tenant.auth
    ) as r:
        reviewer = bearer((await r.json())["token"])
    async with client.post(
        "/v1/keys", json={"api_key": fake_anthropic_key()}, headers=tenant.auth
    ) as r:
        key_id = (await r.json())["id"]
    async with client.get("/v1/keys", headers=reviewer) as r:
        assert r.status == 200
    async with client.post(
        "/v1/keys", json={"api_key": fake_anthropic_key()}, headers=reviewer
    ) as r:
        assert r.status == 403
    async with client.delete(f"/v1/keys/{key_id}", headers=reviewer) as r:
        assert r.status == 403
    async with client.get(f"/v1/keys/{key_id}", headers=tenant.auth) as r:
        assert (await r.json())["revoked_at"] is None
