"""`metrux sandbox run` and `metrux sandbox disconnect`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from core.settings import Settings


def register(parts: Any) -> None:
    sandbox = parts.add_parser("sandbox", help="run a candidate's workload behind its proxy")
    commands = sandbox.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cmd = commands.add_parser("run", help="start the proxy, then COMMAND wired to it")
    cmd.add_argument("--session-credentials", type=Path, required=True, metavar="FILE")
    cmd.add_argument(
        "--keepalive-grace",
        type=float,
        default=30.0,
        help="seconds without the launcher's keepalive before the proxy clears the key",
    )
    cmd.add_argument(
        "--workload-user",
        default=None,
        metavar="USER",
        help="run COMMAND as this user (name or uid); default when started as root: nobody",
    )
    cmd.add_argument(
        "--same-user",
        action="store_true",
        help="development only: run COMMAND as the launcher's own user, which can then read "
        "the credentials file and everything else that user can",
    )
    cmd.add_argument("workload", nargs=argparse.REMAINDER, metavar="-- COMMAND ARGS…")
    cmd.set_defaults(handler=run_sandbox_command)
    cmd = commands.add_parser("disconnect", help="the candidate is gone: clear the key now")
    cmd.add_argument("--session-credentials", type=Path, required=True, metavar="FILE")
    cmd.set_defaults(handler=run_disconnect)


def _fail(message: str, code: int = 2) -> int:
    print(f"metrux sandbox: {message}", file=sys.stderr)
    return code


def run_sandbox_command(args: argparse.Namespace, settings: Settings) -> int:
    from sandbox.credentials import CredentialsError, load_credentials
    from sandbox.launcher import LaunchError, run_sandbox

    workload = args.workload[1:] if args.workload[:1] == ["--"] else args.workload
    if not workload:
        return _fail("give the command to run after --, e.g. -- python app.py")
    if args.keepalive_grace <= 0:
        return _fail("--keepalive-grace must be positive")
    if args.same_user and args.workload_user is not None:
        return _fail("give --workload-user or --same-user, not both")
    try:
        creds = load_credentials(args.session_credentials)
    except CredentialsError as exc:
        return _fail(str(exc))
    try:
        return asyncio.run(
            run_sandbox(
                creds,
                workload,
                parent_env=dict(os.environ),
                data_dir=settings.data_dir,
                keepalive_grace=args.keepalive_grace,
                user=args.workload_user,
                same_user=args.same_user,
            )
        )
    except LaunchError as exc:
        return _fail(str(exc), code=70)
    except FileNotFoundError as exc:
        return _fail(f"cannot run {workload[0]!r}: {exc.strerror}", code=127)


def run_disconnect(args: argparse.Namespace, settings: Settings) -> int:
    from sandbox.credentials import CredentialsError, load_credentials
    from sandbox.launcher import disconnect

    try:
        creds = load_credentials(args.session_credentials)
    except CredentialsError as exc:
        return _fail(str(exc))
    if not asyncio.run(disconnect(creds, settings.data_dir)):
        return _fail("no running sandbox proxy answered for this session", code=1)
    print("disconnected: the session's proxy cleared its key")
    return 0
