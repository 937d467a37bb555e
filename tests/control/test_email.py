"""Invite emails through a Resend-compatible API, and what happens when it fails."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from control.app import create_app
from control.email.sender import read_outbox
from core.settings import Settings
from tests.factories import OPERATOR, fake_anthropic_key, make_tenant

# What these tests check depends on the database: they run on SQLite and PostgreSQL.
pytestmark = pytest.mark.both_databases


class FakeResend:
    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.received: list[tuple[dict[str, str], Any]] = []
        self.app = web.Application()
        self.app.router.add_post("/emails", self.emails)

    async def emails(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.json()))
        return web.json_response({"id": "email_1"}, status=self.status)


async def _send_invite(
    aiohttp_server: Any, aiohttp_client: Any, settings: Settings, engine: AsyncEngine, status: int
) -> tuple[FakeResend, dict[str, Any]]:
    resend = FakeResend(status)
    server = await aiohttp_server(resend.app)
    configured = dataclasses.replace(
        settings, resend_api_key="re_test_key", resend_url=str(server.make_url("")).rstrip("/")
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    client = await aiohttp_client(create_app(configured))
    tenant = await make_tenant(engine)
    async with client.post("/v1/keys", json={"api_key": fake_anthropic_key()}, headers=tenant.auth):
        pass
    body = {"candidate_email": "cand@example.com", "assessment_name": "Take-home"}
    async with client.post("/v1/invites", json=body, headers=tenant.auth) as r:
        assert r.status == 201
        return resend, await r.json()


async def test_invite_goes_out_through_resend(
    aiohttp_server: Any, aiohttp_client: Any, settings: Settings, engine: AsyncEngine
) -> None:
    resend, invite = await _send_invite(aiohttp_server, aiohttp_client, settings, engine, 200)
    [(headers, payload)] = resend.received
    assert headers["Authorization"] == "Bearer re_test_key"
    assert payload["to"] == ["cand@example.com"]
    assert invite["invite_url"] in payload["text"]
    assert invite["email_sent"] is True
    assert await read_outbox(engine, OPERATOR) == []


async def test_a_failed_send_still_returns_the_link_to_deliver_by_hand(
    aiohttp_server: Any, aiohttp_client: Any, settings: Settings, engine: AsyncEngine
) -> None:
    _, invite = await _send_invite(aiohttp_server, aiohttp_client, settings, engine, 500)
    assert invite["email_sent"] is False
    assert "500" in invite["email_error"]
    assert invite["invite_token"].startswith("mxi_")
