"""structlog configuration: JSON lines (console when on a terminal), redacted at emission.

The chain ends `format_exc_info → redact_event → renderer`, so exception text and tracebacks
are scrubbed like every other field. Tracebacks are rendered as plain text, never with local
variables (structlog's `dict_tracebacks` shows locals by default, which leaked key prefixes in
SECURITY-CHECKS.md E5). Standard-library loggers (aiohttp's access log, SQLAlchemy, alembic)
are routed through the same chain.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from core.redaction import redact_event
from core.settings import LogFormat, Settings

_SHARED_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
    structlog.processors.format_exc_info,
    # Last before rendering, after exceptions became text.
    redact_event,
]


# aiohttp's access log: the request line, status, size and time, and no client address or
# user agent. An erasure request cannot reach log lines, so they hold no one's IP; the
# audit log keeps the address of every authenticated request, sealed (docs/privacy.md).
ACCESS_LOG_FORMAT = '"%r" %s %b %Tf'


def _renderer(fmt: LogFormat, stream: TextIO) -> Any:
    use_json = fmt is LogFormat.JSON or (fmt is LogFormat.AUTO and not stream.isatty())
    if use_json:
        return structlog.processors.JSONRenderer(sort_keys=False)
    # ConsoleRenderer must not pretty-print exceptions itself (rich/better-exceptions would
    # re-render them from exc_info, bypassing redaction): format_exc_info already ran.
    return structlog.dev.ConsoleRenderer(
        colors=False, exception_formatter=structlog.dev.plain_traceback
    )


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    """Configure structlog and the stdlib root logger once, at process start."""
    stream = stream or sys.stderr
    level = getattr(logging, settings.log_level.upper())
    renderer = _renderer(settings.log_format, stream)

    structlog.configure(
        processors=[*_SHARED_PROCESSORS, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        # Not cached: tests and the CLI reconfigure, and module-level loggers must follow.
        cache_logger_on_first_use=False,
    )

    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_SHARED_PROCESSORS[:-1],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                redact_event,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Chatty libraries stay at warning unless we are debugging.
    for name in ("sqlalchemy.engine", "alembic", "asyncio", "aiosqlite"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


def processor_chain() -> list[Any]:
    """The processors every event passes through before rendering (tests assert its order)."""
    return list(_SHARED_PROCESSORS)
