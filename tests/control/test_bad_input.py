"""Bad input gets a 4xx in the error shape and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from control.app import MAX_BODY_BYTES
from control.audit.access import ACCESS_ACTIONS
from control.db.schema import api_keys, audit_events, members
from tests.factories import fake_anthropic_key, make_tenant

# What these tests check depends on the database: they run on SQLite and PostgreSQL.
pytestmark = pytest.mark.both_databases


async def _counts(engine: AsyncEngine) -> tuple[int, ...]:
    """Rows of keys, members and audit events: the access row a refused request leaves
    (written in the background) records the attempt, not a change, and is not counted."""
    not_access = audit_events.c.action.not_in([a.value for a in ACCESS_ACTIONS])
    async with engine.connect() as conn:
        return tuple(
            [
                (await conn.execute(select(func.count()).select_from(t))).scalar_one()
                for t in (api_keys, members)
            ]
            + [
                (
                    await conn.execute(
                        select(func.count()).select_from(audit_events).where(not_access)
                    )
                ).scalar_one()
            ]
        )


KEY = object()  # stands for a freshly generated, well-formed key


def raw(data: bytes | str, content_type: str = "application/json") -> tuple[bytes, str]:
    return (data.encode() if isinstance(data, str) else data, content_type)


BAD_REQUESTS: list[tuple[str, str, object, int, str]] = [
    ("POST", "/v1/keys", raw("{not json"), 400, "invalid_request_error"),
    ("POST", "/v1/keys", raw(""), 400, "invalid_request_error"),
    ("POST", "/v1/keys", raw(b"\xff\xfe"), 400, "invalid_request_error"),
    (
        "POST",
        "/v1/keys",
        raw("api_key=x", "application/x-www-form-urlencoded"),
        415,
        "unsupported_media_type",
    ),
    ("POST", "/v1/keys", {}, 422, "validation_error"),
    ("POST", "/v1/keys", [], 422, "validation_error"),
    ("POST", "/v1/keys", {"api_key": 123}, 422, "validation_error"),
    ("POST", "/v1/keys", {"api_key": None}, 422, "validation_error"),
    ("POST", "/v1/keys", {"api_key": ["sk-ant-api03-x"]}, 422, "validation_error"),
    ("POST", "/v1/keys", {"api_key": KEY, "unexpected": 1}, 422, "validation_error"),
    ("POST", "/v1/keys", {"api_key": KEY, "name": ""}, 422, "validation_error"),
    ("POST", "/v1/keys", {"api_key": KEY, "name": "n" * 101}, 422, "validation_error"),
    (
        "POST",
        "/v1/keys",
        raw('{"api_key": "' + "a" * (MAX_BODY_BYTES + 10) + '"}'),
        413,
        "request_too_large",
    ),
    ("POST", "/v1/members", {"email": "not-an-email", "role": "admin"}, 422, "validation_error"),
    ("POST", "/v1/members", {"email": "a@example.com", "role": "god"}, 422, "validation_error"),
    ("POST", "/v1/members", {"email": "a@example.com"}, 422, "validation_error"),
    ("POST", "/v1/members", {"email": 5, "role": "admin"}, 422, "validation_error"),
    ("GET", "/v1/audit?limit=0", None, 422, "validation_error"),
    ("GET", "/v1/audit?limit=abc", None, 422, "validation_error"),
    ("GET", "/v1/audit?cursor=xyz", None, 422, "validation_error"),
    ("GET", "/v1/audit?action=key:explode", None, 422, "validation_error"),
    ("GET", "/v1/audit?since=yesterday", None, 422, "validation_error"),
    ("GET", "/v1/audit?since=2026-01-01T00:00:00", None, 422, "validation_error"),
    ("GET", "/v1/audit?bogus=1", None, 422, "validation_error"),
    # Cursors: ASCII digits within the id column's range ("²".isdigit() is True).
    ("GET", "/v1/audit?cursor=²", None, 422, "validation_error"),
    ("GET", "/v1/audit?cursor=99999999999999999999", None, 422, "validation_error"),
    ("GET", "/v1/audit?cursor=" + "9" * 5000, None, 422, "validation_error"),
    ("GET", "/v1/audit?cursor=-1", None, 422, "validation_error"),
    # A JSON integer longer than Python reads (4,300 digits), in any body.
    # (a key upload's body is capped below that: 413, as above)
    ("POST", "/v1/sessions", raw('{"deadline": ' + "9" * 5000 + "}"), 400, "invalid_request_error"),
    (
        "POST",
        "/v1/members",
        raw('{"email": "a@example.com", "role": "admin", "n": ' + "1" * 4301 + "}"),
        400,
        "invalid_request_error",
    ),
    (
        "POST",
        "/v1/invites",
        raw('{"candidate_email": "a@example.com", "max_requests": ' + "1" * 9000 + "}"),
        400,
        "invalid_request_error",
    ),
    # Nested nearly as deep as the parser allows: checked without exhausting the stack.
    (
        "POST",
        "/v1/members",
        raw('{"role": "admin", "email": ' + "[" * 900 + "]" * 900 + "}"),
        422,
        "validation_error",
    ),
    # NUL characters, which no column can store, in bodies and URLs.
    (
        "POST",
        "/v1/members",
        {"email": "a\x00b@example.com", "role": "admin"},
        400,
        "invalid_request_error",
    ),
    (
        "POST",
        "/v1/invites",
        {"candidate_email": "c@example.com\x00", "assessment_name": "x"},
        400,
        "invalid_request_error",
    ),
    (
        "POST",
        "/v1/sessions",
        {"candidate_email": "c@example.com", "allowed_models": ["m\x00"]},
        400,
        "invalid_request_error",
    ),
    ("POST", "/v1/keys", {"api_key": KEY, "name": "key\x00"}, 400, "invalid_request_error"),
    ("GET", "/v1/sessions/%00", None, 400, "invalid_request_error"),
    ("GET", "/v1/audit?action=%00", None, 400, "invalid_request_error"),
    ("DELETE", "/v1/members/a%00b", None, 400, "invalid_request_error"),
    ("PUT", "/v1/keys", None, 405, "method_not_allowed"),
    ("GET", "/v1/nothing-here", None, 404, "not_found_error"),
]


def _request_kwargs(body: object, auth: dict[str, str]) -> dict[str, Any]:
    if body is None:
        return {"headers": auth}
    if isinstance(body, tuple):
        data, content_type = body
        return {"data": data, "headers": {**auth, "Content-Type": content_type}}
    if isinstance(body, dict):
        body = {k: (fake_anthropic_key() if v is KEY else v) for k, v in body.items()}
    return {"json": body, "headers": auth}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error_type"),
    BAD_REQUESTS,
    ids=[f"{m} {p[:48]} {s}" for m, p, _, s, _ in BAD_REQUESTS],
)
async def test_bad_request_is_refused_in_the_error_shape_and_changes_nothing(
    client: Any,
    engine: AsyncEngine,
    method: str,
    path: str,
    body: object,
    status: int,
    error_type: str,
) -> None:
    tenant = await make_tenant(engine)
    before = await _counts(engine)
    async with client.request(method, path, **_request_kwargs(body, tenant.auth)) as r:
        answer = await r.json()
        assert r.status == status
        assert r.headers["Content-Type"].startswith("application/json")
    assert set(answer) == {"error"}
    assert answer["error"]["type"] == error_type
    assert isinstance(answer["error"]["message"], str)
    assert answer["error"]["message"]
    assert await _counts(engine) == before


async def test_validation_errors_name_each_field(client: Any, engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    async with client.post(
        "/v1/members", json={"email": 1, "role": "god", "x": 1}, headers=tenant.auth
    ) as r:
        details = (await r.json())["error"]["details"]
    assert {d["loc"] for d in details} == {"body.email", "body.role", "body.x"}
