"""Customer key health against the fake Anthropic: checks at upload, background re-checks,
refusals seen in live traffic, and rotation with a live session on the old key."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from typing import Any

import anthropic
import pytest

from control import appkeys
from control.email.sender import read_outbox
from control.keys.monitor import KeyMonitor
from sandbox.standin import MODEL, JsonReply, error_body
from tests.e2e.conftest import Stack
from tests.factories import OPERATOR, TenantFixture, fake_anthropic_key, make_tenant
from tests.scan import Recorder, database_text

PROMPT = [{"role": "user", "content": "hi"}]


def monitor(stack: Stack) -> KeyMonitor:
    return stack.control.app[appkeys.key_monitor]


async def keys_of(api: Recorder, tenant: TenantFixture) -> dict[str, dict[str, Any]]:
    status, listed = await api.call("GET", "/v1/keys", headers=tenant.auth)
    assert status == 200
    return {k["id"]: k for k in listed["keys"]}


async def audit_actions(api: Recorder, tenant: TenantFixture, actions: str) -> list[dict[str, Any]]:
    status, body = await api.call("GET", f"/v1/audit?action={actions}", headers=tenant.auth)
    assert status == 200
    return body["events"]


async def new_session(api: Recorder, tenant: TenantFixture, **extra: Any) -> tuple[int, Any]:
    return await api.call(
        "POST",
        "/v1/sessions",
        json={"candidate_email": "next@example.com", **extra},
        headers=tenant.auth,
    )


async def test_a_good_key_is_checked_with_anthropic_and_stored_valid(stack: Stack) -> None:
    key = fake_anthropic_key()
    stack.fake.accept(key)
    api = Recorder(stack.control)
    status, created = await api.call(
        "POST", "/v1/keys", json={"api_key": key}, headers=stack.tenant.auth
    )
    assert status == 201
    assert (created["status"], created["status_reason"]) == ("valid", None)
    assert created["last_checked_at"] is not None
    assert created["is_default"] is False  # the stack's first key stays the default
    # One cheap authenticated call, with the key as the proxy will send it.
    [check] = stack.fake.requests
    assert (check.method, check.path_qs) == ("GET", "/v1/models?limit=1")
    assert check.headers["x-api-key"] == key
    assert "authorization" not in check.headers


async def test_a_key_anthropic_refuses_is_not_stored(stack: Stack, log_output: Any) -> None:
    refused = fake_anthropic_key()  # the fake does not know it: 401 authentication_error
    api = Recorder(stack.control)
    status, body = await api.call(
        "POST", "/v1/keys", json={"api_key": refused, "name": "typo"}, headers=stack.tenant.auth
    )
    assert status == 422
    assert body["error"]["type"] == "validation_error"
    assert "Anthropic refused this key (authentication_error)" in body["error"]["message"]
    assert list(await keys_of(api, stack.tenant)) == [stack.key_id]
    failure = (await audit_actions(api, stack.tenant, "key:upload"))[0]  # newest first
    assert (failure["outcome"], failure["details"]) == (
        "failure",
        {"last_four": refused[-4:], "reason": "anthropic: authentication_error"},
    )
    stored = await database_text(stack.engine, stack.settings)
    assert refused not in stored
    assert hashlib.sha256(refused.encode()).hexdigest() not in stored
    assert not any(refused in body for body in api.bodies)
    assert refused not in log_output.getvalue()


async def test_upstream_down_stores_unverified_then_valid_once_it_returns(stack: Stack) -> None:
    key = fake_anthropic_key()
    stack.fake.accept(key)
    stack.fake.outage = 529
    api = Recorder(stack.control)
    status, created = await api.call(
        "POST", "/v1/keys", json={"api_key": key}, headers=stack.tenant.auth
    )
    assert status == 201
    assert (created["status"], created["status_reason"]) == ("unverified", "http_529")
    # An unverified key can serve sessions: it may well be fine.
    status, _ = await new_session(api, stack.tenant, api_key_id=created["id"])
    assert status == 201

    start = dt.datetime.now(dt.UTC)
    assert await monitor(stack).check_due(start) == 0  # the first retry is 30 s away
    assert await monitor(stack).check_due(start + dt.timedelta(seconds=31)) == 1
    assert (await keys_of(api, stack.tenant))[created["id"]]["status"] == "unverified"
    assert await monitor(stack).check_due(start + dt.timedelta(seconds=62)) == 0  # backed off
    stack.fake.outage = None
    assert await monitor(stack).check_due(start + dt.timedelta(seconds=92)) == 1
    checked = (await keys_of(api, stack.tenant))[created["id"]]
    assert (checked["status"], checked["status_reason"]) == ("valid", None)

    [change] = await audit_actions(api, stack.tenant, "key:status")
    assert (change["actor_type"], change["target_id"]) == ("system", created["id"])
    assert change["details"] == {
        "from": "unverified",
        "to": "valid",
        "reason": "ok",
        "last_four": key[-4:],
    }
    unwraps = [
        e
        for e in await audit_actions(api, stack.tenant, "key:unwrap")
        if e["details"].get("purpose") == "health_check"
    ]
    assert len(unwraps) == 2  # every check unwraps, and every unwrap is audited


async def test_two_monitors_share_the_due_checks_without_doubling(stack: Stack) -> None:
    keys = [fake_anthropic_key() for _ in range(4)]
    for key in keys:
        stack.fake.accept(key)
        async with stack.control.post(
            "/v1/keys", json={"api_key": key}, headers=stack.tenant.auth
        ) as r:
            assert r.status == 201
    stack.fake.requests.clear()
    app = stack.control.app
    replicas = [
        KeyMonitor(stack.engine, app[appkeys.kek], app[appkeys.key_checker], app[appkeys.email])
        for _ in range(2)
    ]
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)  # every live key is due
    counts = await asyncio.gather(*(m.check_due(later) for m in replicas))
    assert sum(counts) == 5  # the stack's key and the four new ones, each once
    assert len(stack.fake.requests) == 5


async def test_a_key_refused_in_use_is_marked_invalid_and_the_owners_told(
    stack: Stack, log_output: Any
) -> None:
    other = await make_tenant(stack.engine, "Other Co")
    other_key = fake_anthropic_key()
    stack.fake.accept(other_key)
    api = Recorder(stack.control)
    status, _ = await api.call("POST", "/v1/keys", json={"api_key": other_key}, headers=other.auth)
    assert status == 201

    stack.fake.refuse(stack.api_key)  # the customer revoked it at Anthropic
    for _ in range(3):
        with pytest.raises(anthropic.AuthenticationError) as refused:
            await stack.sdk().messages.create(model=MODEL, max_tokens=8, messages=PROMPT)
        # The candidate's client gets Anthropic's error unchanged.
        assert refused.value.status_code == 401
        assert refused.value.body == error_body("authentication_error", "invalid x-api-key")
    records = await stack.records()
    assert [r["http_status"] for r in records] == [401, 401, 401]

    key = (await keys_of(api, stack.tenant))[stack.key_id]
    assert (key["status"], key["status_reason"]) == ("invalid", "authentication_error")
    [change] = await audit_actions(api, stack.tenant, "key:status")  # once, not per call
    assert (change["session_id"], change["details"]["to"]) == (stack.session_id, "invalid")
    [email] = [
        m
        for m in await read_outbox(stack.engine, OPERATOR)
        if m["tenant_id"] == stack.tenant.tenant_id
    ]
    assert email["to_email"] == stack.tenant.owner_email
    assert f"…{stack.api_key[-4:]}" in email["subject"]

    status, body = await new_session(api, stack.tenant)
    assert status == 409
    assert f"key …{stack.api_key[-4:]} was refused by Anthropic" in body["error"]["message"]
    status, _ = await api.call(
        "POST", f"/v1/keys/{stack.key_id}/default", headers=stack.tenant.auth
    )
    assert status == 409
    status, _ = await new_session(api, other)  # another tenant is unaffected
    assert status == 201

    # Re-enabled at Anthropic: a check on request brings the key back.
    stack.fake.accept(stack.api_key)
    status, checked = await api.call(
        "POST", f"/v1/keys/{stack.key_id}/check", headers=stack.tenant.auth
    )
    assert (status, checked["status"]) == (200, "valid")
    status, _ = await new_session(api, stack.tenant)
    assert status == 201

    outbox = "\n".join(str(m) for m in await read_outbox(stack.engine, OPERATOR))
    for secret in (stack.api_key, other_key):
        assert secret not in outbox
        assert secret not in log_output.getvalue()
        assert not any(secret in body for body in api.bodies)


async def test_a_permission_error_is_confirmed_by_a_check_before_it_counts(
    stack: Stack,
) -> None:
    """A 403 can be about one model; the key is re-checked and stays valid if it works."""
    stack.fake.enqueue(
        JsonReply(status=403, body=error_body("permission_error", "no access to this model"))
    )
    with pytest.raises(anthropic.PermissionDeniedError):
        await stack.sdk().messages.create(model=MODEL, max_tokens=8, messages=PROMPT)
    await stack.records()
    api = Recorder(stack.control)
    assert (await keys_of(api, stack.tenant))[stack.key_id]["status"] == "valid"
    stack.fake.requests.clear()
    assert await monitor(stack).check_due() == 1  # made due at once by the report
    assert [r.path_qs for r in stack.fake.requests] == ["/v1/models?limit=1"]
    assert (await keys_of(api, stack.tenant))[stack.key_id]["status"] == "valid"
    assert await audit_actions(api, stack.tenant, "key:status") == []


async def test_rotation_moves_new_sessions_and_keeps_live_ones_on_their_key(
    stack: Stack,
) -> None:
    api = Recorder(stack.control)
    new_key = fake_anthropic_key()
    stack.fake.accept(new_key)
    status, uploaded = await api.call(
        "POST",
        "/v1/keys",
        json={"api_key": new_key, "make_default": True},
        headers=stack.tenant.auth,
    )
    assert (status, uploaded["is_default"]) == (201, True)
    keys = await keys_of(api, stack.tenant)
    assert keys[stack.key_id]["is_default"] is False
    assert keys[stack.key_id]["live_sessions"] == 1

    status, moved = await new_session(api, stack.tenant)
    assert (status, moved["api_key_id"]) == (201, uploaded["id"])

    # The live session still calls with the key it attached with.
    stack.fake.requests.clear()
    await stack.sdk().messages.create(model=MODEL, max_tokens=8, messages=PROMPT)
    assert stack.fake.requests[0].headers["x-api-key"] == stack.api_key
    await stack.records()
    assert (await keys_of(api, stack.tenant))[stack.key_id]["last_used_at"] is not None

    # Revoking the old key clears the proxy still holding it; the new session is untouched.
    status, _ = await api.call("DELETE", f"/v1/keys/{stack.key_id}", headers=stack.tenant.auth)
    assert status == 200
    await asyncio.wait_for(stack.proxy.stopped.wait(), timeout=5)
    assert stack.proxy.stop_reason == "signal_revoke"
    assert stack.proxy.key.buffer_is_zeroed()
    status, session = await api.call(
        "GET", f"/v1/sessions/{moved['id']}", headers=stack.tenant.auth
    )
    assert (status, session["state"]) == (200, "issued")
    status, _ = await new_session(api, stack.tenant, api_key_id=stack.key_id)
    assert status == 404
    status, _ = await new_session(api, stack.tenant)
    assert status == 201
    # An upload with make_default is audited on its upload row.
    assert await audit_actions(api, stack.tenant, "key:default") == []
    [upload] = [
        e
        for e in await audit_actions(api, stack.tenant, "key:upload")
        if e["target_id"] == uploaded["id"]
    ]
    assert upload["details"]["default"] == "true"


async def test_making_a_key_the_default_is_audited(stack: Stack) -> None:
    api = Recorder(stack.control)
    second = fake_anthropic_key()
    stack.fake.accept(second)
    status, uploaded = await api.call(
        "POST", "/v1/keys", json={"api_key": second}, headers=stack.tenant.auth
    )
    assert (status, uploaded["is_default"]) == (201, False)
    status, shown = await api.call(
        "POST", f"/v1/keys/{uploaded['id']}/default", headers=stack.tenant.auth
    )
    assert (status, shown["is_default"]) == (200, True)
    keys = await keys_of(api, stack.tenant)
    assert [k for k, v in keys.items() if v["is_default"]] == [uploaded["id"]]
    [event] = await audit_actions(api, stack.tenant, "key:default")
    assert (event["target_id"], event["actor_type"]) == (uploaded["id"], "member")
