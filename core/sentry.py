"""Optional error reporting to Sentry, on when SENTRY_DSN is set (install the `sentry` extra).

Events leave the process only after the same redaction as log lines: request bodies,
cookies and query strings are dropped, every remaining value goes through
core.redaction, and stack frames carry no local variables (a frame of the upload path
holds the customer's key).
"""

from __future__ import annotations

from typing import Any

import structlog

from core.redaction import redact_value
from core.settings import Settings

log = structlog.get_logger(__name__)


def scrub_event(event: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sentry's before_send: nothing secret, nothing a candidate typed."""
    request = event.get("request")
    if isinstance(request, dict):
        for field in ("data", "cookies", "query_string", "env"):
            request.pop(field, None)
    return redact_value(event)  # type: ignore[no-any-return]


def sentry_options(settings: Settings, release: str) -> dict[str, Any]:
    return {
        "dsn": settings.sentry_dsn,
        "release": release,
        "send_default_pii": False,
        "include_local_variables": False,
        "max_request_body_size": "never",
        "before_send": scrub_event,
        "before_send_transaction": scrub_event,
        "traces_sample_rate": 0.0,
    }


def init_sentry(settings: Settings, release: str) -> bool:
    """Start Sentry if a DSN is set and the SDK installed; say why not otherwise."""
    if not settings.sentry_dsn:
        return False
    try:
        import sentry_sdk
    except ImportError:
        log.warning("sentry_not_installed", advice="pip install 'metrux[sentry]'")
        return False
    sentry_sdk.init(**sentry_options(settings, release))
    return True
