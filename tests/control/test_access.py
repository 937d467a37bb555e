"""Every route declares who may call it, and the declaration is enforced: each protected
route refuses a missing token, a malformed or unknown token, and every role not allowed."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from control.identity import store as member_sessions
from control.web.endpoint import Auth, Role, endpoint_of
from core.tokens import TokenKind, new_token
from tests.factories import bearer, make_tenant
from tests.routes import route_table

ROUTES = route_table()
PROTECTED = [(m, p) for m, p, h in ROUTES if not endpoint_of(h).public]


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "00000000-0000-0000-0000-000000000000", path)


def test_every_route_declares_its_access() -> None:
    undeclared = [(m, p) for m, p, h in ROUTES if endpoint_of(h) is None]
    assert undeclared == []


OWNER, ADMIN, REVIEWER = Role.OWNER, Role.ADMIN, Role.REVIEWER
# The intended roles of every member route, reviewed one by one: reviewers read sessions
# and their evidence (and may share a report for an hour); everything that changes keys,
# members, invites or a session's course is for owners and admins.
INTENDED = {
    ("POST", "/v1/keys"): {OWNER, ADMIN},
    ("GET", "/v1/keys"): {OWNER, ADMIN, REVIEWER},
    ("GET", "/v1/keys/{key_id}"): {OWNER, ADMIN, REVIEWER},
    ("POST", "/v1/keys/{key_id}/default"): {OWNER, ADMIN},
    ("POST", "/v1/keys/{key_id}/check"): {OWNER, ADMIN},
    ("DELETE", "/v1/keys/{key_id}"): {OWNER, ADMIN},
    ("POST", "/v1/members"): {OWNER, ADMIN},
    ("GET", "/v1/members"): {OWNER, ADMIN},
    ("DELETE", "/v1/members/{member_id}"): {OWNER, ADMIN},
    ("PATCH", "/v1/members/{member_id}"): {OWNER, ADMIN},
    ("POST", "/v1/invites"): {OWNER, ADMIN},
    ("GET", "/v1/invites"): {OWNER, ADMIN},
    ("POST", "/v1/sessions"): {OWNER, ADMIN},
    ("GET", "/v1/sessions"): {OWNER, ADMIN, REVIEWER},
    ("GET", "/v1/sessions/{session_id}"): {OWNER, ADMIN, REVIEWER},
    ("POST", "/v1/sessions/{session_id}/end"): {OWNER, ADMIN},
    ("POST", "/v1/sessions/{session_id}/grading-complete"): {OWNER, ADMIN},
    ("POST", "/v1/sessions/{session_id}/grader-token"): {OWNER, ADMIN},
    ("POST", "/v1/sessions/{session_id}/bootstrap-token"): {OWNER, ADMIN},
    ("GET", "/v1/sessions/{session_id}/usage"): {OWNER, ADMIN, REVIEWER},
    ("GET", "/v1/sessions/{session_id}/usage/summary"): {OWNER, ADMIN, REVIEWER},
    ("GET", "/v1/audit"): {OWNER, ADMIN},
    ("GET", "/v1/audit/head"): {OWNER, ADMIN},
    ("GET", "/v1/audit/export"): {OWNER, ADMIN},
    ("GET", "/v1/sessions/{session_id}/digest"): {OWNER, ADMIN, REVIEWER},
    ("GET", "/v1/sessions/{session_id}/report"): {OWNER, ADMIN, REVIEWER},
    ("GET", "/v1/sessions/{session_id}/report.csv"): {OWNER, ADMIN, REVIEWER},
    ("POST", "/v1/sessions/{session_id}/report-link"): {OWNER, ADMIN, REVIEWER},
    ("POST", "/v1/auth/logout"): {OWNER, ADMIN, REVIEWER},
    # The console: reviewers see the overview and the keys; keys' actions and the audit
    # log are for owners and admins, as in the API.
    ("GET", "/console/"): {OWNER, ADMIN, REVIEWER},
    ("POST", "/console/signout"): {OWNER, ADMIN, REVIEWER},
    ("GET", "/console/keys"): {OWNER, ADMIN, REVIEWER},
    ("POST", "/console/keys"): {OWNER, ADMIN},
    ("POST", "/console/keys/{key_id}/default"): {OWNER, ADMIN},
    ("POST", "/console/keys/{key_id}/check"): {OWNER, ADMIN},
    ("GET", "/console/keys/{key_id}/revoke"): {OWNER, ADMIN},
    ("POST", "/console/keys/{key_id}/revoke"): {OWNER, ADMIN},
    ("GET", "/console/members"): {OWNER, ADMIN},
    ("POST", "/console/members"): {OWNER, ADMIN},
    ("GET", "/console/sessions"): {OWNER, ADMIN, REVIEWER},
    ("GET", "/console/sessions/{session_id}"): {OWNER, ADMIN, REVIEWER},
    ("GET", "/console/sessions/{session_id}/calls"): {OWNER, ADMIN, REVIEWER},
    ("POST", "/console/sessions/{session_id}/report"): {OWNER, ADMIN, REVIEWER},
    ("GET", "/console/sessions/{session_id}/end"): {OWNER, ADMIN},
    ("POST", "/console/sessions/{session_id}/end"): {OWNER, ADMIN},
    ("POST", "/console/sessions/{session_id}/grader-token"): {OWNER, ADMIN},
    ("GET", "/console/invites"): {OWNER, ADMIN},
    ("POST", "/console/invites"): {OWNER, ADMIN},
    ("POST", "/console/members/{member_id}/role"): {OWNER, ADMIN},
    ("GET", "/console/members/{member_id}/revoke"): {OWNER, ADMIN},
    ("POST", "/console/members/{member_id}/revoke"): {OWNER, ADMIN},
    ("GET", "/console/audit"): {OWNER, ADMIN},
    ("GET", "/console/audit.csv"): {OWNER, ADMIN},
}


async def _error_type(r: Any) -> str:
    """The error's type: from the JSON error shape, or from a console page's heading."""
    if r.content_type == "text/html":
        found = re.search(r'data-error="([a-z_]+)"', await r.text())
        return found.group(1) if found else ""
    return str((await r.json())["error"]["type"])


def test_every_member_route_allows_exactly_its_intended_roles() -> None:
    """A new member route must be added here with its roles; a declaration that drifts
    from this table fails."""
    declared = {(m, p): set(endpoint_of(h).access) for m, p, h in ROUTES if (m, p) in PROTECTED}
    assert declared == INTENDED


def test_only_ops_and_invite_token_routes_are_open_and_only_attach_takes_a_bootstrap_token() -> (
    None
):
    by_auth = {
        auth: sorted(p for m, p, h in ROUTES if endpoint_of(h).auth is auth) for auth in Auth
    }
    assert by_auth[Auth.NONE] == [
        "/.well-known/security-policy.txt",
        "/.well-known/security.txt",
        "/console",
        "/console/signin",
        "/console/signin",
        "/console/signin/oidc",
        "/console/signin/oidc/callback",
        "/console/static/{name}",
        "/healthz",
        "/invite/{token}",
        "/invite/{token}/accept",
        "/openapi.json",
        "/readyz",
        "/v1/auth/handoff",
        "/v1/invites/{token}",
        "/v1/invites/{token}/accept",
    ]
    assert by_auth[Auth.BOOTSTRAP] == ["/internal/v1/sessions/{session_id}/attach"]
    assert by_auth[Auth.PROXY] == [
        "/internal/v1/sessions/{session_id}/signals",
        "/internal/v1/sessions/{session_id}/usage",
    ]
    # The candidate's session token can only submit: nothing it reaches attaches a proxy.
    assert by_auth[Auth.SANDBOX] == ["/v1/sessions/{session_id}/submit"]
    assert by_auth[Auth.CANDIDATE] == [
        "/me",
        "/me/delete",
        "/me/delete",
        "/me/export",
        "/v1/auth/me",
        "/v1/auth/me/delete-request",
        "/v1/auth/me/export",
    ]
    assert by_auth[Auth.REPORT] == ["/sessions/{session_id}"]
    assert by_auth[Auth.METRICS] == ["/metrics"]


OWN_TOKEN_ROUTES = [
    (m, p) for m, p, h in ROUTES if endpoint_of(h).auth in (Auth.CANDIDATE, Auth.REPORT)
]


@pytest.mark.parametrize(("method", "path"), OWN_TOKEN_ROUTES)
async def test_candidate_and_report_routes_refuse_other_credentials(
    client: Any, engine: AsyncEngine, method: str, path: str
) -> None:
    tenant = await make_tenant(engine)
    for headers in (
        {},
        bearer("not-a-token"),
        bearer(new_token(TokenKind.CANDIDATE)),  # well-formed, unknown
        bearer(new_token(TokenKind.SESSION)),
    ):
        async with client.request(method, _concrete(path), headers=headers) as r:
            assert r.status == 401, headers
            assert await _error_type(r) == "authentication_error"
    forged = {"Cookie": f"metrux_candidate={new_token(TokenKind.CANDIDATE)}"}
    async with client.request(method, _concrete(path), headers=forged) as r:
        assert r.status == 401  # a forged candidate cookie
    if path.startswith(("/v1/auth/me", "/me")):  # a member is not the candidate
        async with client.request(method, _concrete(path), headers=tenant.auth) as r:
            assert r.status == 401


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_unauthenticated_calls_are_refused(client: Any, method: str, path: str) -> None:
    for headers in (
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        bearer("not-a-token"),
        bearer(new_token(TokenKind.MEMBER)),  # well-formed, unknown
        bearer(new_token(TokenKind.SESSION)),  # a token of another kind
        {"Cookie": f"metrux_session={new_token(TokenKind.MEMBER_SESSION)}"},  # forged cookie
        {"Cookie": "metrux_session=garbage"},
    ):
        async with client.request(method, _concrete(path), headers=headers, json={}) as r:
            assert r.status == 401, headers
            assert await _error_type(r) == "authentication_error"
            assert r.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_roles_outside_the_declaration_are_refused(
    client: Any, engine: AsyncEngine, method: str, path: str
) -> None:
    handler = next(h for m, p, h in ROUTES if (m, p) == (method, path))
    allowed = endpoint_of(handler).access
    tenant = await make_tenant(engine)
    for role in Role:
        if role is Role.OWNER or role in allowed:
            continue
        async with client.post(
            "/v1/members",
            json={"email": f"{role}@example.com", "role": role.value},
            headers=tenant.auth,
        ) as r:
            token = (await r.json())["token"]
        async with client.request(method, _concrete(path), headers=bearer(token), json={}) as r:
            assert r.status == 403, role
            assert await _error_type(r) == "permission_error"


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_roles_outside_the_declaration_are_refused_with_a_session_cookie_too(
    client: Any, engine: AsyncEngine, method: str, path: str
) -> None:
    """The same declaration holds for members signed in through the identity provider."""
    handler = next(h for m, p, h in ROUTES if (m, p) == (method, path))
    allowed = endpoint_of(handler).access
    tenant = await make_tenant(engine)
    now = dt.datetime.now(dt.UTC)
    for role in Role:
        if role in allowed:
            continue
        async with client.post(
            "/v1/members",
            json={"email": f"{role}@example.com", "role": role.value},
            headers=tenant.auth,
        ) as r:
            member_id = (await r.json())["id"]
        async with engine.begin() as conn:
            issued = await member_sessions.issue(
                conn, member_id=member_id, tenant_id=tenant.tenant_id, role=role.value,
                subject=None, lifetime=dt.timedelta(hours=1), now=now,
            )  # fmt: skip
        async with client.request(
            method,
            _concrete(path),
            cookies={"metrux_session": issued.token},
            headers={"X-CSRF-Token": issued.csrf_token},
            json={},
        ) as r:
            assert r.status == 403, role
            assert await _error_type(r) == "permission_error"
