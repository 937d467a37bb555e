"""`metrux proxy run`: attach, arm the key, serve the session, clear and exit.

Imports happen inside the handlers, so other `metrux` commands do not load the proxy."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import signal
import sys
from pathlib import Path
from typing import Any

import structlog

from core.settings import Settings

log = structlog.get_logger(__name__)
DRAIN_TIMEOUT_S = 120.0


def register(parts: Any) -> None:
    proxy = parts.add_parser("proxy", help="the per-session proxy")
    commands = proxy.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cmd = commands.add_parser("run", help="attach to a session and serve its sandbox")
    cmd.add_argument("--session", required=True, help="the session id")
    cmd.add_argument("--control-url", required=True, help="the control plane's base URL")
    cmd.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any free port)")
    cmd.add_argument("--upstream", default=None, help="default: METRUX_UPSTREAM_URL")
    cmd.add_argument(
        "--bootstrap-token-file",
        type=Path,
        help="file holding the mxb_ token (else METRUX_BOOTSTRAP_TOKEN); never pass it in argv",
    )
    cmd.add_argument(
        "--metrics-listen",
        default=None,
        help="HOST:PORT for Prometheus metrics at /metrics (default: not served)",
    )
    cmd.add_argument(
        "--keepalive-grace",
        type=float,
        default=0.0,
        help="clear the key when the launcher's keepalive stops for this many seconds "
        "(0: no keepalive expected)",
    )
    cmd.set_defaults(handler=run_proxy)


def _loop_factory() -> Any:
    try:
        import uvloop
    except ImportError:  # not on this platform: the standard loop works, only slower
        return None
    return uvloop.new_event_loop


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--listen must be HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _fail(message: str) -> int:
    print(f"metrux proxy: {message}", file=sys.stderr)
    return 1


def run_proxy(args: argparse.Namespace, settings: Settings) -> int:
    from core.hardening import disable_core_dumps
    from proxy.attach import AttachError

    disable_core_dumps()
    if settings.sentry_dsn:
        from core.sentry import init_sentry

        init_sentry(settings, "metrux-proxy")
    try:
        host, port = parse_listen(args.listen)
        metrics_at = parse_listen(args.metrics_listen) if args.metrics_listen else None
    except ValueError as exc:
        return _fail(str(exc))
    if args.bootstrap_token_file is not None:
        try:
            token = args.bootstrap_token_file.read_text().strip()
        except OSError as exc:
            return _fail(f"cannot read --bootstrap-token-file ({exc.strerror})")
    else:
        token = settings.bootstrap_token or ""
    if not token:
        return _fail("no bootstrap token: set METRUX_BOOTSTRAP_TOKEN or --bootstrap-token-file")
    upstream = (args.upstream or settings.upstream_url).rstrip("/")
    from proxy.key_opener import KeyOpener

    # Started first: the child loads its cryptography while this process loads the rest.
    opener = KeyOpener()
    try:
        # uvloop: the proxy's per-call overhead is mostly event-loop work (see bench/).
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(
                serve(
                    settings,
                    args.session,
                    args.control_url,
                    token,
                    upstream,
                    host,
                    port,
                    args.keepalive_grace,
                    metrics_at,
                    opener,
                )
            )
    except AttachError as exc:
        return _fail(str(exc))
    finally:
        opener.close()


async def serve(
    settings: Settings,
    session_id: str,
    control_url: str,
    bootstrap_token: str,
    upstream: str,
    host: str,
    port: int,
    keepalive_grace: float = 0.0,
    metrics_at: tuple[str, int] | None = None,
    opener: Any = None,
) -> int:
    """Attach, run until the session's key is cleared, drain, and stop."""
    from proxy.app import Proxy, serve_metrics
    from proxy.attach import attach

    structlog.contextvars.bind_contextvars(session_id=session_id)
    grant, key = await attach(control_url, session_id, bootstrap_token, opener=opener)
    proxy = Proxy(
        settings,
        grant,
        key,
        control_url=control_url,
        upstream_url=upstream,
        keepalive_grace=keepalive_grace,
    )
    session = proxy.session
    # No access log: every call already leaves a usage record.
    await proxy.start(host, port)
    bound_port = proxy.address[1]
    metrics_server = None
    if metrics_at is not None:
        metrics_server = await serve_metrics(proxy.metrics, *metrics_at)
        log.info("proxy_metrics_listening", port=metrics_server.address[1])
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, session.clear, signal.Signals(signum).name.lower())
    # What start-up made lives as long as the process: the collector stops walking it.
    gc.freeze()
    ready = {"event": "ready", "url": proxy.url, "session_id": session_id}
    print(json.dumps(ready), flush=True)
    log.info("proxy_ready", session_id=session_id, port=bound_port, epoch=grant.info.epoch)

    await session.stopped.wait()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(session.idle.wait(), DRAIN_TIMEOUT_S)
    await proxy.stop()  # stops the listener, then each resource: records flushed first
    if metrics_server is not None:
        metrics_server.close()
    log.info(
        "proxy_exiting",
        session_id=session_id,
        reason=session.stop_reason,
        unsent_records=proxy.publisher.pending,
    )
    return 0
