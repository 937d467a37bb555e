"""The attack catalogue against a live control plane (issue 5, item 9).

Each row is one hostile request. Every row asserts the same four things: the status it
must get, the API's error shape, that no row of any table changed (the audit log aside,
which records refusals), and that neither the customer's key nor any token of the
tenant's appears in the response or in anything the service logged.

Cross-tenant rows are generated for every route that takes an id, from the route table,
so a new route is attacked without anyone adding a row.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from control.app import create_app
from control.db.schema import metadata
from control.web.endpoint import Auth, endpoint_of
from core.settings import Settings
from core.tokens import TokenKind, new_token
from tests.factories import TenantFixture, fake_anthropic_key, make_tenant
from tests.routes import route_table

# What these tests check depends on the database: they run on SQLite and PostgreSQL.
pytestmark = pytest.mark.both_databases


@dataclasses.dataclass
class World:
    client: Any
    engine: AsyncEngine
    log: io.StringIO
    alice: TenantFixture
    bob: TenantFixture
    api_key: str
    ids: dict[str, str]  # alice's objects, by placeholder
    secrets: list[str]  # what must never come back or be logged


@pytest.fixture
async def world(
    aiohttp_client: Any, settings: Settings, engine: AsyncEngine, log_output: io.StringIO
) -> World:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    client = await aiohttp_client(create_app(settings))
    alice = await make_tenant(engine, "Alice Co")
    bob = await make_tenant(engine, "Bob Co")
    api_key = fake_anthropic_key()
    async with client.post("/v1/keys", json={"api_key": api_key}, headers=alice.auth) as r:
        key = await r.json()
    async with client.post(
        "/v1/sessions", json={"candidate_email": "c@example.com"}, headers=alice.auth
    ) as r:
        session = await r.json()
    async with client.post(
        "/v1/members", json={"email": "rev@alice.example", "role": "reviewer"}, headers=alice.auth
    ) as r:
        member = await r.json()
    async with client.post(
        "/v1/invites",
        json={"candidate_email": "i@example.com", "assessment_name": "Take-home"},
        headers=alice.auth,
    ) as r:
        invite = await r.json()
    ids = {
        "key_id": key["id"],
        "session_id": session["id"],
        "member_id": member["id"],
        "token": invite["invite_token"],
    }
    secrets = [
        api_key,
        api_key[-16:],
        alice.owner_token,
        bob.owner_token,
        member["token"],
        session["sandbox_token"],
        session["bootstrap_token"],
        session["grader_token"],
        invite["invite_token"],
    ]
    return World(client, engine, log_output, alice, bob, api_key, ids, secrets)


async def _snapshot(engine: AsyncEngine) -> dict[str, int]:
    """Row counts and a content digest of every table but the audit log's: its rows, its
    chains' heads, and the subject keys its writes make on first use (an attack is audited,
    and its access rows are written in the background)."""
    counts = {}
    async with engine.connect() as conn:
        for table in metadata.sorted_tables:
            if table.name in ("audit_events", "audit_chains", "subject_keys"):
                continue
            rows = (await conn.execute(select(table))).all()
            counts[table.name] = hash(tuple(sorted(map(repr, rows))))
            counts[f"{table.name}#"] = (
                await conn.execute(select(func.count()).select_from(table))
            ).scalar_one()
    return counts


@dataclasses.dataclass(frozen=True)
class Attack:
    name: str
    method: str
    path: str
    status: int
    error_type: str
    json_body: Any = None
    raw_body: bytes | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    as_: str = "alice"  # whose credentials: alice, bob, or none
    # Framing errors (header floods, oversized headers) are refused by aiohttp's HTTP
    # parser before any application code runs, in its own plain-text shape.
    api_shape: bool = True


SQL_META = "x' OR '1'='1'; DROP TABLE sessions; --"
CATALOGUE = [
    # Malformed bodies.
    Attack("malformed_json", "POST", "/v1/sessions", 400, "invalid_request_error",
           raw_body=b'{"candidate_email": "c@example.com",,}'),
    Attack("not_utf8", "POST", "/v1/keys", 400, "invalid_request_error",
           raw_body=b'{"api_key": "\xff\xfe"}'),
    Attack("json_array_not_object", "POST", "/v1/sessions", 422, "validation_error",
           json_body=[1, 2, 3]),
    Attack("wrong_type", "POST", "/v1/sessions", 422, "validation_error",
           json_body={"candidate_email": 123}),
    Attack("unknown_field", "POST", "/v1/sessions", 422, "validation_error",
           json_body={"candidate_email": "c@example.com", "tenant_id": "someone-else"}),
    Attack("wrong_media_type", "POST", "/v1/keys", 415, "unsupported_media_type",
           raw_body=b"api_key=sk-ant-x", headers={"Content-Type": "text/plain"}),
    Attack("huge_body", "POST", "/v1/sessions", 413, "request_too_large",
           raw_body=b'{"candidate_email": "' + b"a" * (2 * 1024 * 1024) + b'"}'),
    Attack("deep_nesting", "POST", "/v1/sessions", 400, "invalid_request_error",
           raw_body=b'{"candidate_email": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
    # SQL metacharacters in every kind of string field.
    Attack("sql_in_email", "POST", "/v1/sessions", 422, "validation_error",
           json_body={"candidate_email": SQL_META}),
    Attack("sql_in_member_email", "POST", "/v1/members", 422, "validation_error",
           json_body={"email": SQL_META, "role": "admin"}),
    Attack("sql_in_role", "POST", "/v1/members", 422, "validation_error",
           json_body={"email": "m@example.com", "role": SQL_META}),
    Attack("sql_in_query", "GET", "/v1/audit?action=" + SQL_META, 422, "validation_error"),
    Attack("sql_in_path_id", "GET", "/v1/sessions/" + SQL_META.replace(" ", "%20"), 404,
           "not_found_error"),
    Attack("sql_in_invite_token", "GET", "/v1/invites/" + SQL_META.replace(" ", "%20"), 404,
           "not_found_error", as_="none"),
    # Path traversal in ids.
    Attack("traversal_encoded", "GET", "/v1/keys/..%2F..%2Fetc%2Fpasswd", 404, "not_found_error"),
    Attack("traversal_dots", "GET", "/v1/sessions/%2e%2e", 404, "not_found_error"),
    Attack("traversal_report", "GET", "/v1/sessions/..%2F{session_id}/report", 404,
           "not_found_error"),
    # Input no column can hold, and numbers past what a parser reads.
    Attack("nul_in_path_id", "GET", "/v1/sessions/%00", 400, "invalid_request_error"),
    Attack("nul_in_query", "GET", "/v1/audit?action=key%00upload", 400, "invalid_request_error"),
    Attack("nul_in_email", "POST", "/v1/invites", 400, "invalid_request_error",
           json_body={"candidate_email": "a\x00@example.com", "assessment_name": "x"}),
    Attack("superscript_cursor", "GET", "/v1/audit?cursor=%C2%B2", 422, "validation_error"),
    Attack("cursor_past_bigint", "GET", "/v1/audit?cursor=" + "9" * 20, 422, "validation_error"),
    Attack("cursor_of_5000_digits", "GET", "/v1/audit?cursor=" + "9" * 5000, 422,
           "validation_error"),
    Attack("integer_of_5000_digits", "POST", "/v1/sessions", 400, "invalid_request_error",
           raw_body=b'{"candidate_email": "c@example.com", "max_requests": ' + b"9" * 5000
           + b"}"),
    # Header floods and oversized headers.
    Attack("header_flood", "GET", "/v1/keys", 400, "", api_shape=False,
           headers={f"x-h{n}": "v" for n in range(200)}),
    Attack("oversized_header", "GET", "/v1/keys", 400, "", api_shape=False,
           headers={"x-big": "a" * 16000}),
    # Forged, expired and replayed credentials.
    Attack("forged_member_token", "GET", "/v1/keys", 401, "authentication_error",
           headers={"Authorization": f"Bearer {new_token(TokenKind.MEMBER)}"}, as_="none"),
    Attack("member_token_of_wrong_kind", "GET", "/v1/keys", 401, "authentication_error",
           headers={"Authorization": "Bearer {sandbox_token}"}, as_="none"),
    Attack("forged_cookie", "GET", "/v1/keys", 401, "authentication_error",
           headers={"Cookie": f"metrux_session={new_token(TokenKind.MEMBER_SESSION)}"},
           as_="none"),
    Attack("forged_jwt_alg_none", "POST", "/v1/auth/handoff", 404, "not_found_error",
           json_body={"token": "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."}, as_="none"),
    Attack("forged_bootstrap", "POST", "/internal/v1/sessions/{session_id}/attach", 401,
           "authentication_error",
           headers={"Authorization": f"Bearer {new_token(TokenKind.BOOTSTRAP)}"}, as_="none"),
    Attack("forged_invite", "POST", f"/v1/invites/{new_token(TokenKind.INVITE)}/accept", 404,
           "not_found_error", as_="none"),
    Attack("forged_report_link", "GET", "/sessions/{session_id}?token=" + new_token(
        TokenKind.REPORT), 401, "authentication_error", as_="none"),
    Attack("basic_auth", "GET", "/v1/keys", 401, "authentication_error",
           headers={"Authorization": "Basic YWxpY2U6cGFzc3dvcmQ="}, as_="none"),
]  # fmt: skip


def _fill(text: str, world: World) -> str:
    values = {**world.ids, "sandbox_token": world.secrets[5]}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m[1], m[0]), text)


async def _send(world: World, attack: Attack) -> tuple[int, str, str]:
    headers = {k: _fill(v, world) for k, v in attack.headers.items()}
    if attack.as_ == "alice":
        headers = {**world.alice.auth, **headers}
    elif attack.as_ == "bob":
        headers = {**world.bob.auth, **headers}
    kwargs: dict[str, Any] = {"headers": headers}
    if attack.raw_body is not None:
        kwargs["data"] = attack.raw_body
        headers.setdefault("Content-Type", "application/json")
    elif attack.json_body is not None:
        kwargs["json"] = attack.json_body
    async with world.client.request(attack.method, _fill(attack.path, world), **kwargs) as r:
        body = await r.text()
        return r.status, body, json.dumps(dict(r.headers))


def _assert_clean(world: World, *texts: str) -> None:
    for text in (*texts, world.log.getvalue()):
        for secret in world.secrets:
            assert secret not in text


@pytest.mark.parametrize("attack", CATALOGUE, ids=lambda a: a.name)
async def test_attack_is_refused_in_shape_changes_nothing_and_leaks_nothing(
    world: World, attack: Attack
) -> None:
    before = await _snapshot(world.engine)
    status, body, headers = await _send(world, attack)
    assert status == attack.status, body[:300]
    if attack.api_shape:
        error = json.loads(body)["error"]
        assert error["type"] == attack.error_type
        assert isinstance(error["message"], str)
    assert await _snapshot(world.engine) == before
    _assert_clean(world, body, headers)


def _id_routes() -> list[tuple[str, str]]:
    return [
        (method, path)
        for method, path, handler in route_table()
        if re.search(r"\{(session_id|key_id|member_id)\}", path)
        and endpoint_of(handler).auth is Auth.MEMBER
    ]


@pytest.mark.parametrize(("method", "path"), _id_routes())
async def test_another_tenants_ids_are_not_found_on_every_route(
    world: World, method: str, path: str
) -> None:
    """Bob, an owner, names Alice's objects: 404, as if they did not exist."""
    before = await _snapshot(world.engine)
    async with world.client.request(
        method, _fill(path, world), headers=world.bob.auth, json={}
    ) as r:
        body = await r.text()
        assert r.status == 404, (method, path, body[:200])
        if r.content_type == "text/html":  # a console page
            assert 'data-error="not_found_error"' in body
        else:
            assert json.loads(body)["error"]["type"] == "not_found_error"
    assert await _snapshot(world.engine) == before
    _assert_clean(world, body)


async def test_replayed_credentials_stay_dead(world: World) -> None:
    """A used invite, a revoked member token and an ended session's tokens, replayed."""
    client, alice = world.client, world.alice
    async with client.post(f"/v1/invites/{world.ids['token']}/accept") as r:
        assert r.status == 201
        accepted = await r.json()
    async with client.post(f"/v1/invites/{world.ids['token']}/accept") as r:
        assert r.status == 404
    async with client.post(
        "/v1/members", json={"email": "gone@alice.example", "role": "admin"}, headers=alice.auth
    ) as r:
        gone = await r.json()
    async with client.delete(f"/v1/members/{gone['id']}", headers=alice.auth) as r:
        assert r.status == 200
    async with client.get("/v1/keys", headers={"Authorization": f"Bearer {gone['token']}"}) as r:
        assert r.status == 401
    session_id = accepted["session_id"]
    async with client.post(f"/v1/sessions/{session_id}/end", headers=alice.auth) as r:
        assert r.status == 200
    assert "bootstrap_token" not in accepted  # the candidate never holds one
    async with client.post(f"/v1/sessions/{session_id}/bootstrap-token", headers=alice.auth) as r:
        assert r.status == 409  # the session is over: nobody gets an attach credential
    async with client.post(
        f"/v1/sessions/{session_id}/reconnect",
        headers={"Authorization": f"Bearer {accepted['sandbox_token']}"},
    ) as r:
        assert r.status == 404  # the candidate's reconnect route is gone
    async with client.get(
        "/v1/auth/me", headers={"Authorization": f"Bearer {accepted['candidate_token']}"}
    ) as r:
        assert r.status == 200  # the candidate's own token outlives the session, by design
    _assert_clean(world)
