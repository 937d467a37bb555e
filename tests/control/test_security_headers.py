"""security.txt (RFC 9116) and the security headers every control-plane response carries."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from control.app import create_app
from core.settings import Settings
from tests.factories import fake_anthropic_key, make_tenant


async def test_security_txt_names_contact_expiry_policy_and_language(client: Any) -> None:
    async with client.get("/.well-known/security.txt") as r:
        assert r.status == 200
        assert r.content_type == "text/plain"
        fields = dict(line.split(": ", 1) for line in (await r.text()).splitlines())
    assert fields["Contact"] == "mailto:security@metrux.ai"
    assert fields["Preferred-Languages"] == "en"
    expires = dt.datetime.fromisoformat(fields["Expires"].replace("Z", "+00:00"))
    now = dt.datetime.now(dt.UTC)
    assert now < expires < now + dt.timedelta(days=365)  # RFC 9116: under a year ahead
    policy = fields["Policy"].split("://", 1)[1].split("/", 1)[1]
    async with client.get("/" + policy) as r:
        assert r.status == 200
        assert "security@metrux.ai" in await r.text()


async def test_every_response_carries_the_security_headers(
    client: Any, engine: AsyncEngine
) -> None:
    tenant = await make_tenant(engine)
    async with client.post("/v1/keys", json={"api_key": fake_anthropic_key()}, headers=tenant.auth):
        pass
    checks = [
        ("GET", "/healthz", {}, 200),
        ("GET", "/v1/keys", {}, 401),
        ("GET", "/no/such/route", {}, 404),
        ("POST", "/v1/sessions", tenant.auth, 201),  # carries tokens
    ]
    for method, path, headers, status in checks:
        async with client.request(
            method, path, headers=headers, json={"candidate_email": "c@example.com"}
        ) as r:
            assert r.status == status, path
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert r.headers["X-Frame-Options"] == "DENY"
            assert "Strict-Transport-Security" not in r.headers  # plain HTTP here
            if path.startswith("/v1/"):
                assert r.headers["Cache-Control"] == "no-store", path


async def test_hsts_is_sent_behind_tls(aiohttp_client: Any, settings: Settings) -> None:
    settings = dataclasses.replace(settings, public_url="https://metrux.example.com")
    client = await aiohttp_client(create_app(settings))
    async with client.get("/healthz") as r:
        assert r.headers["Strict-Transport-Security"] == "max-age=31536000"
