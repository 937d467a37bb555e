"""Sentry (issue 18): off unless SENTRY_DSN is set, and what it sends carries no request
body, cookie, query string or key, checked through the real SDK with a capturing transport."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from core.sentry import init_sentry, sentry_options
from core.settings import Settings
from tests.factories import fake_anthropic_key


class Captured(Transport):
    """Keeps what the SDK would send, instead of sending it."""

    sent: list[dict[str, Any]] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        for item in envelope.items:
            if item.headers.get("type") == "event":
                Captured.sent.append(json.loads(item.payload.get_bytes()))


@pytest.fixture
def no_sentry_client() -> Iterator[None]:
    yield
    sentry_sdk.get_global_scope().set_client(None)


def test_sentry_stays_off_when_sentry_dsn_is_unset(
    settings: Settings, no_sentry_client: None
) -> None:
    assert settings.sentry_dsn is None
    assert init_sentry(settings, "metrux-control") is False
    assert not sentry_sdk.get_client().is_active()
    sentry_sdk.capture_message("nothing may leave")  # a no-op without a client


def test_sentry_sends_no_request_body_cookie_query_or_key(
    settings: Settings, no_sentry_client: None
) -> None:
    key = fake_anthropic_key()
    on = dataclasses.replace(settings, sentry_dsn="https://public@sentry.invalid/1")
    Captured.sent = []
    sentry_sdk.init(**sentry_options(on, "metrux-control"), transport=Captured)
    assert sentry_sdk.get_client().is_active()
    with sentry_sdk.new_scope() as scope:
        # What the aiohttp integration attaches to an event raised during a request.
        scope.add_event_processor(
            lambda event, _hint: {
                **event,
                "request": {
                    "url": "http://control/v1/keys",
                    "method": "POST",
                    "data": {"api_key": key, "note": "candidate@example.com"},
                    "cookies": {"mx_session": "mxm_" + "c" * 43},
                    "query_string": "report=mxr_" + "d" * 43,
                    "headers": {"Authorization": "Bearer mxk_" + "b" * 43, "User-Agent": "curl"},
                },
            }
        )
        try:
            raise ValueError(f"upload failed for {key}")
        except ValueError as exc:
            sentry_sdk.capture_exception(exc)
    sentry_sdk.flush()
    [event] = Captured.sent
    text = json.dumps(event)
    for secret in (key, "candidate@example.com", "c" * 43, "d" * 43, "b" * 43):
        assert secret not in text
    assert set(event["request"]) == {"url", "method", "headers"}
    assert event["request"]["headers"]["User-Agent"] == "curl"
    frames = event["exception"]["values"][0]["stacktrace"]["frames"]
    assert all("vars" not in frame for frame in frames)  # no local variables (the key)
