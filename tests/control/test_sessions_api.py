"""Sessions through the control-plane API: issue, show, transitions, and the attach step."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from core.crypto.sealing import Recipient, SealError, seal_info
from core.tokens import hash_token
from tests.factories import TenantFixture, bearer, fake_anthropic_key, make_tenant

# What these tests check depends on the database: they run on SQLite and PostgreSQL.
pytestmark = pytest.mark.both_databases


async def _setup(
    client: Any, engine: AsyncEngine, **session: Any
) -> tuple[TenantFixture, str, dict[str, Any]]:
    tenant = await make_tenant(engine)
    async with client.post(
        "/v1/keys", json={"api_key": fake_anthropic_key()}, headers=tenant.auth
    ) as r:
        key_id = (await r.json())["id"]
    async with client.post(
        "/v1/sessions", json={"candidate_email": "Cand@Example.com", **session}, headers=tenant.auth
    ) as r:
        assert r.status == 201
        return tenant, key_id, await r.json()


async def _attach(
    client: Any, session_id: str, token: str, recipient: Recipient | None = None
) -> tuple[int, dict[str, Any]]:
    body = (recipient or Recipient()).as_json()
    async with client.post(
        f"/internal/v1/sessions/{session_id}/attach", json=body, headers=bearer(token)
    ) as r:
        return r.status, await r.json()


async def _audit(client: Any, tenant: TenantFixture, action: str) -> list[dict[str, Any]]:
    async with client.get(f"/v1/audit?action={action}", headers=tenant.auth) as r:
        return (await r.json())["events"]


async def test_issue_returns_both_tokens_once_and_stores_only_hashes(
    client: Any, engine: AsyncEngine
) -> None:
    tenant, key_id, created = await _setup(
        client, engine, max_requests=50, allowed_models=["claude-haiku-4-5"]
    )
    assert created["sandbox_token"].startswith("mxs_")
    assert created["bootstrap_token"].startswith("mxb_")
    assert created["state"] == "issued"
    assert created["api_key_id"] == key_id
    assert created["limits"] == {
        "max_requests": 50,
        "max_output_tokens": None,
        "allowed_models": ["claude-haiku-4-5"],
        "allowed_betas": None,
        "allowed_server_tools": None,
    }
    async with client.get(f"/v1/sessions/{created['id']}", headers=tenant.auth) as r:
        shown = await r.json()
    assert "sandbox_token" not in shown
    assert "bootstrap_token" not in shown
    assert shown["proxy_online"] is False
    [event] = await _audit(client, tenant, "session:create")
    assert event["session_id"] == created["id"]


async def test_attach_works_once_and_is_audited(client: Any, engine: AsyncEngine) -> None:
    tenant, key_id, created = await _setup(client, engine)
    recipient = Recipient()
    status, grant = await _attach(client, created["id"], created["bootstrap_token"], recipient)
    assert status == 200
    assert grant["session_token_sha256"] == hash_token(created["sandbox_token"])
    assert grant["key_id"] == key_id
    assert set(grant["sealed_key"]) == {
        "suite",
        "sealed_data_key",
        "nonce",
        "ciphertext",
        "version",
    }
    assert grant["sealed_key"]["suite"] == recipient.suite.value
    assert grant["proxy_token"].startswith("mxp_")
    assert grant["epoch"] == 1
    assert grant["state"] == "active"
    status, refused = await _attach(client, created["id"], created["bootstrap_token"])
    assert status == 401
    assert refused["error"]["message"] == "bootstrap token already used"
    unwraps = await _audit(client, tenant, "key:unwrap")
    assert [(e["outcome"], e["session_id"]) for e in unwraps] == [
        ("failure", created["id"]),
        ("success", created["id"]),
    ]
    assert unwraps[0]["details"] == {"reason": "bootstrap token already used"}


@pytest.mark.parametrize("bad", ["mxb_" + "A" * 43, "mxs_" + "A" * 43, ""])
async def test_attach_with_a_wrong_token_is_refused(
    client: Any, engine: AsyncEngine, bad: str
) -> None:
    _, _, created = await _setup(client, engine)
    status, body = await _attach(client, created["id"], bad)
    assert status == 401
    assert body["error"]["type"] == "authentication_error"
    status, _ = await _attach(client, created["id"], created["bootstrap_token"])
    assert status == 200  # the real token was not burnt by the failures


async def test_a_session_of_a_revoked_key_cannot_attach(client: Any, engine: AsyncEngine) -> None:
    tenant, key_id, created = await _setup(client, engine)
    async with client.delete(f"/v1/keys/{key_id}", headers=tenant.auth) as r:
        assert r.status == 200
    status, body = await _attach(client, created["id"], created["bootstrap_token"])
    assert status == 403
    assert body["error"]["message"] == "session is revoked"


async def test_an_ended_session_cannot_attach_or_end_again(
    client: Any, engine: AsyncEngine
) -> None:
    tenant, _, created = await _setup(client, engine)
    async with client.post(f"/v1/sessions/{created['id']}/end", headers=tenant.auth) as r:
        assert (r.status, (await r.json())["state"]) == (200, "ended")
    async with client.post(
        f"/v1/sessions/{created['id']}/grading-complete", headers=tenant.auth
    ) as r:
        assert r.status == 409
    status, body = await _attach(client, created["id"], created["bootstrap_token"])
    assert (status, body["error"]["message"]) == (403, "session is ended")
    assert [e["action"] for e in await _audit(client, tenant, "session:end")] == ["session:end"]


async def _submit(client: Any, created: dict[str, Any]) -> None:
    async with client.post(
        f"/v1/sessions/{created['id']}/submit", headers=bearer(created["sandbox_token"])
    ) as r:
        assert (r.status, (await r.json())["state"]) == (200, "submitted")


async def test_grading_complete_needs_a_submitted_session_and_an_owner_or_admin(
    client: Any, engine: AsyncEngine
) -> None:
    tenant, _, created = await _setup(client, engine)
    grade = f"/v1/sessions/{created['id']}/grading-complete"
    async with client.post(grade, headers=tenant.auth) as r:  # still live: not submitted
        assert r.status == 409
        assert (await r.json())["error"][
            "message"
        ] == "a session that is issued cannot grading complete"
    await _submit(client, created)
    async with client.post(
        "/v1/members", json={"email": "rev@example.com", "role": "reviewer"}, headers=tenant.auth
    ) as r:
        reviewer = bearer((await r.json())["token"])
    async with client.post(grade, headers=reviewer) as r:
        assert r.status == 403
    async with client.get(f"/v1/sessions/{created['id']}", headers=tenant.auth) as r:
        assert (await r.json())["state"] == "submitted"  # the reviewer changed nothing
    async with client.post(grade, headers=tenant.auth) as r:
        body = await r.json()
    assert (body["state"], body["ended_at"] is not None) == ("graded", True)


async def test_sessions_need_a_live_key(client: Any, engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    async with client.post(
        "/v1/sessions", json={"candidate_email": "c@example.com"}, headers=tenant.auth
    ) as r:
        assert r.status == 409
        assert "no default key: upload one" in (await r.json())["error"]["message"]


@pytest.mark.parametrize(
    "deadline",
    [
        (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat(),
        (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat(),
        "2030-01-01T00:00:00",
    ],
    ids=["in-the-past", "beyond-the-maximum", "without-a-timezone"],
)
async def test_bad_deadlines_are_refused(client: Any, engine: AsyncEngine, deadline: str) -> None:
    tenant = await make_tenant(engine)
    async with client.post("/v1/keys", json={"api_key": fake_anthropic_key()}, headers=tenant.auth):
        pass
    async with client.post(
        "/v1/sessions",
        json={"candidate_email": "c@example.com", "deadline": deadline},
        headers=tenant.auth,
    ) as r:
        assert r.status == 422


async def test_other_tenants_sessions_are_not_found(client: Any, engine: AsyncEngine) -> None:
    _, _, created = await _setup(client, engine)
    other = await make_tenant(engine, "Other")
    for method, path in [
        ("GET", f"/v1/sessions/{created['id']}"),
        ("POST", f"/v1/sessions/{created['id']}/end"),
        ("POST", f"/v1/sessions/{created['id']}/grading-complete"),
        ("GET", f"/v1/sessions/{created['id']}/usage"),
        ("GET", f"/v1/sessions/{created['id']}/usage/summary"),
    ]:
        async with client.request(method, path, headers=other.auth) as r:
            assert r.status == 404, path


async def test_the_sealed_key_opens_only_with_the_attaching_proxy_and_its_session(
    client: Any, engine: AsyncEngine
) -> None:
    """What the grant carries is useless without the attaching process's private key, and
    a seal replayed for another session does not open."""
    _, key_id, created = await _setup(client, engine)
    recipient = Recipient()
    _, grant = await _attach(client, created["id"], created["bootstrap_token"], recipient)
    sealed = base64.b64decode(grant["sealed_key"]["sealed_data_key"])
    info = seal_info(session_id=created["id"], tenant_id=grant["tenant_id"], key_id=key_id)
    assert len(recipient.open(sealed, info)) == 32
    with pytest.raises(SealError):
        Recipient().open(sealed, info)  # another process's key pair
    other = seal_info(session_id="another-session", tenant_id=grant["tenant_id"], key_id=key_id)
    with pytest.raises(SealError):
        recipient.open(sealed, other)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"suite": "x25519-hkdfsha256-aes256gcm", "public_key": "not base64!"},
        {"suite": "x25519-hkdfsha256-aes256gcm", "public_key": base64.b64encode(b"short").decode()},
        {"suite": "rsa", "public_key": base64.b64encode(b"x" * 32).decode()},
    ],
)
async def test_attach_without_a_usable_public_key_is_refused_and_spends_nothing(
    client: Any, engine: AsyncEngine, body: dict[str, Any]
) -> None:
    _, _, created = await _setup(client, engine)
    async with client.post(
        f"/internal/v1/sessions/{created['id']}/attach",
        json=body,
        headers=bearer(created["bootstrap_token"]),
    ) as r:
        assert r.status == 422
        assert (await r.json())["error"]["type"] == "validation_error"
    status, _ = await _attach(client, created["id"], created["bootstrap_token"])
    assert status == 200


async def test_a_fresh_bootstrap_token_is_for_admins_and_the_old_one_stops_working(
    client: Any, engine: AsyncEngine
) -> None:
    tenant, _, created = await _setup(client, engine)
    async with client.post(
        f"/v1/sessions/{created['id']}/bootstrap-token", headers=bearer(created["sandbox_token"])
    ) as r:
        assert r.status == 401  # the candidate's token can never get one
    async with client.post(
        f"/v1/sessions/{created['id']}/bootstrap-token", headers=tenant.auth
    ) as r:
        assert r.status == 200
        fresh = (await r.json())["bootstrap_token"]
    status, _ = await _attach(client, created["id"], created["bootstrap_token"])
    assert status == 401
    status, _ = await _attach(client, created["id"], fresh)
    assert status == 200
    [event] = await _audit(client, tenant, "session:bootstrap_token")
    assert event["session_id"] == created["id"]


async def test_the_session_list_filters_by_state_candidate_and_date(
    client: Any, engine: AsyncEngine
) -> None:
    tenant = await make_tenant(engine)
    other = await make_tenant(engine, "Other")
    for who in (tenant, other):
        async with client.post(
            "/v1/keys", json={"api_key": fake_anthropic_key()}, headers=who.auth
        ):
            pass
    ids = {}
    for email in ("a@example.com", "b@example.com"):
        async with client.post(
            "/v1/sessions", json={"candidate_email": email}, headers=tenant.auth
        ) as r:
            ids[email] = (await r.json())["id"]
    async with client.post(
        "/v1/sessions", json={"candidate_email": "x@example.com"}, headers=other.auth
    ):
        pass
    async with client.post(f"/v1/sessions/{ids['a@example.com']}/end", headers=tenant.auth):
        pass

    async def listed(query: str) -> list[tuple[str, str]]:
        async with client.get(f"/v1/sessions{query}", headers=tenant.auth) as r:
            assert r.status == 200, await r.text()
            return [(s["candidate_email"], s["state"]) for s in (await r.json())["sessions"]]

    assert await listed("") == [("b@example.com", "issued"), ("a@example.com", "ended")]
    assert await listed("?state=ended") == [("a@example.com", "ended")]
    assert await listed("?candidate=B@Example.com") == [("b@example.com", "issued")]
    assert await listed("?since=2099-01-01T00:00:00Z") == []
    for bad in ("?state=nonsense", "?since=yesterday", "?since=2026-01-01T00:00:00", "?limit=0"):
        async with client.get(f"/v1/sessions{bad}", headers=tenant.auth) as r:
            assert r.status == 422, bad
