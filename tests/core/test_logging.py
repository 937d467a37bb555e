"""Logs are JSON lines, redacted at emission: fields, exception text and tracebacks alike."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from core.logging import configure_logging, processor_chain
from core.redaction import redact_event
from core.settings import LogFormat, Settings
from tests.factories import fake_anthropic_key


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    root = logging.getLogger()
    saved = list(root.handlers)
    configure_logging(Settings(log_format=LogFormat.JSON, log_level="debug"), stream=out)
    yield out
    structlog.reset_defaults()
    root.handlers[:] = saved


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_redaction_is_the_last_processor_before_rendering() -> None:
    chain = processor_chain()
    assert chain[-1] is redact_event
    assert chain.index(structlog.processors.format_exc_info) < chain.index(redact_event)


def test_events_are_json_with_the_secret_redacted(stream: io.StringIO) -> None:
    key = fake_anthropic_key()
    structlog.get_logger("t").info("upstream_call", detail=f"x-api-key: {key}", nested={"k": [key]})
    [line] = lines(stream)
    assert line["event"] == "upstream_call"
    assert key[-16:] not in stream.getvalue()


def _fail_with(key: str) -> None:
    headers = {"x-api-key": key}  # a local holding the key, as in a real handler
    raise RuntimeError(f"upstream refused request with headers {headers}")


def test_exception_text_and_traceback_are_redacted(stream: io.StringIO) -> None:
    """The exception message carries the key and the frame holds it in a local; neither
    reaches the log, in whole or in any 16-character piece."""
    key = fake_anthropic_key()
    try:
        _fail_with(key)
    except RuntimeError:
        structlog.get_logger("t").exception("call_failed")
    output = stream.getvalue()
    assert "Traceback" in output
    assert "RuntimeError" in output
    assert all(key[i : i + 16] not in output for i in range(len(key) - 15))


def test_stdlib_loggers_go_through_the_same_redaction(stream: io.StringIO) -> None:
    """aiohttp's access log and other libraries log through logging; they are redacted too."""
    key = fake_anthropic_key()
    logging.getLogger("aiohttp.access").info('127.0.0.1 "GET /?key=%s HTTP/1.1" 200', key)
    try:
        _fail_with(key)
    except RuntimeError:
        logging.getLogger("some.library").exception("library failure")
    output = stream.getvalue()
    assert len(lines(stream)) == 2
    assert key[-16:] not in output
    assert key[:24] not in output


def test_console_format_is_redacted_too() -> None:
    out = io.StringIO()
    saved = list(logging.getLogger().handlers)
    configure_logging(Settings(log_format=LogFormat.CONSOLE), stream=out)
    key = fake_anthropic_key()
    try:
        try:
            _fail_with(key)
        except RuntimeError:
            structlog.get_logger("t").exception("call_failed", key_hint=key)
        assert "call_failed" in out.getvalue()
        assert key[-16:] not in out.getvalue()
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers[:] = saved


def test_email_addresses_never_reach_a_log_line(log_output: io.StringIO) -> None:
    """A deletion request cannot reach logs, so no address goes there: in a field, in the
    message, or in a stdlib line (an access log's request line)."""
    structlog.get_logger("t").info(
        "invited ada.lovelace+test@example.co.uk", to="ada@example.com", emails=["b@x.io"]
    )
    logging.getLogger("aiohttp.access").warning('"GET /v1/x?email=c%40d.io&e=f@g.dev"')
    out = log_output.getvalue()
    for address in ("ada.lovelace+test@example.co.uk", "ada@example.com", "b@x.io", "f@g.dev"):
        assert address not in out
    assert out.count("[redacted:email]") == 4
