"""Members signing in through an identity provider (Clerk-style OIDC JWTs): the handoff,
the session cookie, CSRF, rotation on a role change, revocation."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from control.app import create_app
from control.db.schema import members
from core.settings import Settings
from tests.factories import make_tenant

# What these tests check depends on the database: they run on SQLite and PostgreSQL.
pytestmark = pytest.mark.both_databases

ISSUER = "https://clerk.example.test"
AUDIENCE = "metrux-dashboard"


class FakeIdentityProvider:
    """Serves a JWKS document and signs tokens with its private key, as Clerk does."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "ins_test_key"
        self.jwks_fetches = 0
        self.app = web.Application()
        self.app.router.add_get("/.well-known/jwks.json", self._jwks)

    async def _jwks(self, request: web.Request) -> web.Response:
        self.jwks_fetches += 1
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return web.json_response({"keys": [{**public, "kid": self.kid, "use": "sig"}]})

    def token(self, email: str, **claims: Any) -> str:
        """A signed token; a claim given as None is left out."""
        now = int(time.time())
        payload = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "user_2abc",
            "iat": now,
            "nbf": now,
            "exp": now + 60,
            "email": email,
            "email_verified": True,
            **claims,
        }
        return jwt.encode(
            {k: v for k, v in payload.items() if v is not None},
            self.key,
            algorithm="RS256",
            headers={"kid": self.kid},
        )


@pytest.fixture
async def idp(aiohttp_server: Any) -> tuple[FakeIdentityProvider, str]:
    provider = FakeIdentityProvider()
    server = await aiohttp_server(provider.app)
    return provider, str(server.make_url("/.well-known/jwks.json"))


@pytest.fixture
async def app_client(aiohttp_client: Any, settings: Settings, idp: Any) -> Any:
    _, jwks_url = idp
    configured = dataclasses.replace(
        settings,
        oidc_jwks_url=jwks_url,
        oidc_issuer=ISSUER,
        oidc_audience=AUDIENCE,
        public_url="https://metrux.example.test",
    )
    return await aiohttp_client(create_app(configured))


async def _handoff(client: Any, token: str, **extra: Any) -> Any:
    return await client.post("/v1/auth/handoff", json={"token": token, **extra})


def _cookie(response: Any) -> str:
    return response.cookies["metrux_session"].value


async def test_a_verified_identity_gets_a_hardened_session_cookie(
    app_client: Any, idp: Any, engine: AsyncEngine
) -> None:
    provider, _ = idp
    tenant = await make_tenant(engine, email="dana@acme.example")
    r = await _handoff(app_client, provider.token("Dana@Acme.example"))
    assert r.status == 200
    body = await r.json()
    assert (body["member_id"], body["tenant_id"], body["role"]) == (
        tenant.owner_id,
        tenant.tenant_id,
        "owner",
    )
    morsel = r.cookies["metrux_session"]
    assert morsel.value.startswith("mxm_")
    assert morsel["httponly"] is True
    assert morsel["secure"] is True
    assert morsel["samesite"] == "Lax"
    assert morsel["path"] == "/"
    assert 0 < int(morsel["max-age"]) <= 12 * 3600
    assert r.headers["X-CSRF-Token"] == body["csrf_token"]
    assert r.headers["Cache-Control"] == "no-store"
    cookies = {"metrux_session": morsel.value}
    # Reads need only the cookie.
    async with app_client.get("/v1/keys", cookies=cookies) as keys:
        assert keys.status == 200
    # Writes need the CSRF token as well, and a same-origin Origin if one is sent.
    async with app_client.post(
        "/v1/members", json={"email": "x@acme.example"}, cookies=cookies
    ) as w:
        assert w.status == 403
        assert "CSRF" in (await w.json())["error"]["message"]
    csrf = {"X-CSRF-Token": body["csrf_token"]}
    async with app_client.post(
        "/v1/members",
        json={"email": "x@acme.example"},
        cookies=cookies,
        headers={**csrf, "Origin": "https://evil.example"},
    ) as w:
        assert w.status == 403
        assert (await w.json())["error"]["message"] == "cross-origin request refused"
    async with app_client.post(
        "/v1/members",
        json={"email": "x@acme.example", "role": "reviewer"},
        cookies=cookies,
        headers={**csrf, "Origin": "https://metrux.example.test"},
    ) as w:
        assert w.status == 201


@pytest.mark.parametrize(
    "forge",
    [
        "alg_none",
        "wrong_key",
        "hs256_with_public_key",
        "expired",
        "wrong_issuer",
        "wrong_audience",
        "unknown_kid",
        "no_sub",
        "unverified_email",
        "garbage",
    ],
)
async def test_forged_or_unfit_identity_tokens_are_refused(
    app_client: Any, idp: Any, engine: AsyncEngine, forge: str
) -> None:
    provider, _ = idp
    await make_tenant(engine, email="dana@acme.example")
    email = "dana@acme.example"
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "u", "iat": now, "exp": now + 60}
    public_pem = provider.key.public_key().public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    tokens = {
        "alg_none": jwt.encode({**claims, "email": email}, None, algorithm="none"),
        "wrong_key": jwt.encode(
            {**claims, "email": email},
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            algorithm="RS256",
            headers={"kid": provider.kid},
        ),
        "hs256_with_public_key": _hs256({**claims, "email": email}, public_pem, kid=provider.kid),
        "expired": provider.token(email, exp=now - 120, iat=now - 300),
        "wrong_issuer": provider.token(email, iss="https://other.example"),
        "wrong_audience": provider.token(email, aud="someone-else"),
        "unknown_kid": jwt.encode(
            {**claims, "email": email}, provider.key, algorithm="RS256", headers={"kid": "nope"}
        ),
        "no_sub": provider.token(email, sub=None),
        "unverified_email": provider.token(email, email_verified=False),
        "email_verified_missing": provider.token(email, email_verified=None),
        "email_verified_a_string": provider.token(email, email_verified="true"),
        "garbage": "not.a.jwt",
    }
    r = await _handoff(app_client, tokens[forge])
    assert r.status == 401, forge
    body = await r.json()
    assert body["error"]["type"] == "authentication_error"
    assert tokens[forge] not in json.dumps(body)
    assert "metrux_session" not in r.cookies


def _hs256(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    """The algorithm-confusion attack, built by hand (PyJWT refuses to sign it)."""
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    payload = b64(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


async def test_identities_without_a_membership_or_with_several_are_told_so(
    app_client: Any, idp: Any, engine: AsyncEngine
) -> None:
    provider, _ = idp
    r = await _handoff(app_client, provider.token("stranger@example.com"))
    assert r.status == 403
    first = await make_tenant(engine, name="One", email="multi@example.com")
    second = await make_tenant(engine, name="Two", email="multi@example.com")
    r = await _handoff(app_client, provider.token("multi@example.com"))
    assert r.status == 409
    message = (await r.json())["error"]["message"]
    assert first.tenant_id in message
    assert second.tenant_id in message
    r = await _handoff(app_client, provider.token("multi@example.com"), tenant_id=second.tenant_id)
    assert r.status == 200
    assert (await r.json())["tenant_id"] == second.tenant_id


async def test_logout_and_member_revocation_end_the_session_server_side(
    app_client: Any, idp: Any, engine: AsyncEngine
) -> None:
    provider, _ = idp
    tenant = await make_tenant(engine, email="dana@acme.example")
    r = await _handoff(app_client, provider.token("dana@acme.example"))
    cookie, csrf = _cookie(r), (await r.json())["csrf_token"]
    async with app_client.post(
        "/v1/auth/logout", cookies={"metrux_session": cookie}, headers={"X-CSRF-Token": csrf}
    ) as out:
        assert out.status == 204
        assert out.cookies["metrux_session"].value == ""
    async with app_client.get("/v1/keys", cookies={"metrux_session": cookie}) as after:
        assert after.status == 401  # the old cookie, replayed, is dead
    async with app_client.post("/v1/auth/logout", headers=tenant.auth) as token_logout:
        assert token_logout.status == 400
    # Revoking the member ends their browser sessions too.
    async with app_client.post(
        "/v1/members", json={"email": "rev@acme.example", "role": "admin"}, headers=tenant.auth
    ) as created:
        admin = await created.json()
    r = await _handoff(app_client, provider.token("rev@acme.example"))
    admin_cookie = {"metrux_session": _cookie(r)}
    async with app_client.get("/v1/keys", cookies=admin_cookie) as ok:
        assert ok.status == 200
    async with app_client.delete(f"/v1/members/{admin['id']}", headers=tenant.auth) as revoked:
        assert revoked.status == 200
    async with app_client.get("/v1/keys", cookies=admin_cookie) as gone:
        assert gone.status == 401


async def test_a_role_change_rotates_the_cookie(
    app_client: Any, idp: Any, engine: AsyncEngine
) -> None:
    provider, _ = idp
    tenant = await make_tenant(engine)
    async with app_client.post(
        "/v1/members", json={"email": "rita@acme.example", "role": "admin"}, headers=tenant.auth
    ) as created:
        rita = await created.json()
    r = await _handoff(app_client, provider.token("rita@acme.example"))
    old = _cookie(r)
    async with engine.begin() as conn:
        await conn.execute(
            update(members).where(members.c.id == rita["id"]).values(role="reviewer")
        )
    async with app_client.get("/v1/keys", cookies={"metrux_session": old}) as rotated:
        assert rotated.status == 200
        new = rotated.cookies["metrux_session"].value
        assert new.startswith("mxm_")
        assert new != old
        assert rotated.headers["X-CSRF-Token"].startswith("mxf_")
    async with app_client.get("/v1/keys", cookies={"metrux_session": old}) as replay:
        assert replay.status == 401
    # The new cookie carries the new, lower role.
    async with app_client.get("/v1/members", cookies={"metrux_session": new}) as lowered:
        assert lowered.status == 403


async def test_handoff_is_off_until_configured(client: Any) -> None:
    async with client.post("/v1/auth/handoff", json={"token": "x"}) as r:
        assert r.status == 404
        assert "not enabled" in (await r.json())["error"]["message"]


async def test_an_unreachable_identity_provider_is_a_503_not_a_401(
    aiohttp_client: Any, settings: Settings, idp: Any
) -> None:
    provider, _ = idp
    down = dataclasses.replace(
        settings,
        oidc_jwks_url="http://127.0.0.1:9/.well-known/jwks.json",
        oidc_issuer=ISSUER,
        oidc_audience=AUDIENCE,
    )
    client = await aiohttp_client(create_app(down))
    r = await _handoff(client, provider.token("dana@acme.example"))
    assert r.status == 503
    assert r.headers["Retry-After"] == "5"
    assert (await r.json())["error"]["type"] == "unavailable"
