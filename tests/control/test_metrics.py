"""Prometheus metrics on the control plane: requests by route template and status, the
shared-state gauges, and nothing identifying in any label."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from control.app import create_app
from core.sentry import scrub_event, sentry_options
from core.settings import Settings
from tests.factories import METRICS_AUTH, fake_anthropic_key, make_tenant

# What these tests check depends on the database: they run on SQLite and PostgreSQL.
pytestmark = pytest.mark.both_databases


async def test_requests_sessions_and_keys_are_counted_without_ids(
    client: Any, engine: AsyncEngine
) -> None:
    tenant = await make_tenant(engine)
    key = fake_anthropic_key()
    async with client.post("/v1/keys", json={"api_key": key}, headers=tenant.auth) as r:
        key_id = (await r.json())["id"]
    async with client.post(
        "/v1/sessions", json={"candidate_email": "c@example.com"}, headers=tenant.auth
    ) as r:
        session = await r.json()
    for _ in range(2):
        async with client.get("/healthz"):
            pass
    async with client.get(f"/v1/sessions/{session['id']}"):  # no token: 401
        pass
    async with client.get("/metrics", headers=METRICS_AUTH) as r:
        assert r.status == 200
        text = await r.text()
    assert 'metrux_http_requests_total{method="GET",route="/healthz",status="200"} 2.0' in text
    by_route = 'metrux_http_requests_total{method="GET",route="/v1/sessions/{session_id}",'
    assert by_route + 'status="401"} 1.0' in text
    assert 'metrux_sessions{state="issued"} 1.0' in text
    assert 'metrux_customer_keys{status="unverified"} 1.0' in text
    assert (
        'metrux_http_request_duration_seconds_bucket{le="0.005",method="GET",route="/healthz"}'
        in text
    )
    for secret in (key, key_id, session["id"], session["sandbox_token"], tenant.tenant_id):
        assert secret not in text


async def test_metrics_answer_only_the_scrapers_token(
    aiohttp_client: Any, settings: Settings, engine: AsyncEngine
) -> None:
    client = await aiohttp_client(create_app(settings))
    tenant = await make_tenant(engine)
    for headers in ({}, tenant.auth, {"Authorization": "Bearer wrong"}, {"Cookie": "x=y"}):
        async with client.get("/metrics", headers=headers) as r:
            assert r.status == 401
            assert (await r.json())["error"]["type"] == "authentication_error"
    async with client.get("/metrics", headers=METRICS_AUTH) as r:
        assert r.status == 200
        assert "metrux_http_requests_total" in await r.text()


async def test_without_a_metrics_token_metrics_are_off(
    aiohttp_client: Any, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(dataclasses.replace(settings, metrics_token=None)))
    async with client.get("/metrics", headers=METRICS_AUTH) as r:
        assert r.status == 404
        assert "METRUX_METRICS_TOKEN" in (await r.json())["error"]["message"]


def test_sentry_events_are_scrubbed_before_they_leave(settings: Settings) -> None:
    key = fake_anthropic_key()
    event = {
        "message": f"upload failed for {key}",
        "request": {
            "url": "http://control/v1/keys",
            "data": {"api_key": key},
            "cookies": "mx_report=mxr_" + "a" * 43,
            "headers": {"Authorization": "Bearer mxk_" + "b" * 43, "User-Agent": "curl"},
        },
        "exception": {"values": [{"value": f"bad key {key}"}]},
    }
    scrubbed = scrub_event(event)
    text = str(scrubbed)
    assert key not in text
    assert "mxk_" + "b" * 43 not in text
    assert "data" not in scrubbed["request"]
    assert "cookies" not in scrubbed["request"]
    assert scrubbed["request"]["headers"]["User-Agent"] == "curl"
    options = sentry_options(settings, "metrux-control")
    assert options["before_send"] is scrub_event
    assert (options["send_default_pii"], options["include_local_variables"]) == (False, False)
    assert options["max_request_body_size"] == "never"


async def test_no_client_chosen_text_becomes_a_metrics_label(client: Any) -> None:
    """Redaction for metrics is by construction: labels are route templates, known methods
    and statuses, so a key in a path or a made-up method never reaches /metrics."""
    key = fake_anthropic_key()
    async with client.get(f"/v1/sessions/{key}/usage") as r:
        assert r.status == 401
    async with client.get(f"/nowhere/{key}") as r:
        assert r.status == 404
    async with client.request("PROPFIND", "/v1/keys") as r:  # parsed, but not ours
        assert r.status == 405
    async with client.get("/metrics", headers=METRICS_AUTH) as r:
        text = await r.text()
    assert key not in text
    assert key[-16:] not in text
    assert 'route="/v1/sessions/{session_id}/usage"' in text
    assert 'route="unmatched"' in text
    assert 'method="OTHER"' in text
    assert "PROPFIND" not in text
