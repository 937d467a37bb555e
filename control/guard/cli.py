"""`metrux control blocklist list|add|remove` and `metrux control scan-logs FILE…`."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from core.settings import Settings

_T = TypeVar("_T")


def register(commands: Any, operator: Callable[[], Any]) -> None:
    blocklist = commands.add_parser("blocklist", help="blocked client addresses")
    steps = blocklist.add_subparsers(dest="step", required=True, metavar="STEP")
    cmd = steps.add_parser("list", help="print current blocks as JSON lines")
    cmd.set_defaults(handler=run_blocklist_list)
    cmd = steps.add_parser("add", help="block an address (audited)")
    cmd.add_argument("ip")
    cmd.add_argument(
        "--for", dest="seconds", type=int, default=None, help="seconds (default: until removed)"
    )
    cmd.add_argument("--reason", default="blocked by an operator")
    cmd.set_defaults(handler=run_blocklist_add, operator=operator)
    cmd = steps.add_parser("remove", help="unblock an address (audited)")
    cmd.add_argument("ip")
    cmd.set_defaults(handler=run_blocklist_remove, operator=operator)

    cmd = commands.add_parser(
        "scan-logs", help="report lines holding a live customer key (by fingerprint); exit 1 if any"
    )
    cmd.add_argument("files", nargs="+", type=Path, metavar="FILE")
    cmd.set_defaults(handler=run_scan_logs, operator=operator)


def _fail(message: str) -> int:
    print(f"metrux: {message}", file=sys.stderr)
    return 1


def _with_blocklist(settings: Settings, use: Callable[[Any], Awaitable[_T]]) -> _T:
    from redis.asyncio import Redis

    from control.db.engine import create_engine
    from control.guard.blocklist import Blocklist, BlockPolicy
    from core.redis_names import RedisNames
    from core.redis_server import redis_url

    async def go() -> _T:
        engine = create_engine(settings.effective_database_url)
        client = Redis.from_url(redis_url(settings))
        try:
            names = RedisNames(settings.redis_prefix)
            return await use(Blocklist(client, names, engine, BlockPolicy.from_settings(settings)))
        finally:
            await client.aclose()
            await engine.dispose()

    return asyncio.run(go())


def _address(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def run_blocklist_list(args: argparse.Namespace, settings: Settings) -> int:
    import dataclasses

    for block in _with_blocklist(settings, lambda blocklist: blocklist.list()):
        print(json.dumps(dataclasses.asdict(block)))
    return 0


def run_blocklist_add(args: argparse.Namespace, settings: Settings) -> int:
    ip = _address(args.ip)
    if ip is None:
        return _fail(f"{args.ip!r} is not an IP address")
    if args.seconds is not None and args.seconds <= 0:
        return _fail("--for must be a positive number of seconds")
    block = _with_blocklist(
        settings, lambda blocklist: blocklist.add(ip, args.seconds, args.reason, args.operator())
    )
    print(json.dumps({"ip": block.ip, "seconds": args.seconds, "reason": block.reason}))
    return 0


def run_blocklist_remove(args: argparse.Namespace, settings: Settings) -> int:
    ip = _address(args.ip)
    if ip is None:
        return _fail(f"{args.ip!r} is not an IP address")
    removed = _with_blocklist(settings, lambda blocklist: blocklist.remove(ip, args.operator()))
    print(json.dumps({"ip": ip, "removed": removed}))
    return 0 if removed else _fail(f"{ip} was not blocked")


def run_scan_logs(args: argparse.Namespace, settings: Settings) -> int:
    from control.db.engine import create_engine
    from control.keys.canary import live_fingerprints, scan_files

    missing = [str(path) for path in args.files if not path.is_file()]
    if missing:
        return _fail(f"no such file: {', '.join(missing)}")

    async def fingerprints() -> dict[str, Any]:
        engine = create_engine(settings.effective_database_url)
        try:
            return await live_fingerprints(engine, args.operator())
        finally:
            await engine.dispose()

    findings = scan_files(args.files, asyncio.run(fingerprints()))
    for finding in findings:
        print(
            json.dumps(
                {
                    "file": finding.path,
                    "line": finding.line,
                    "key_id": finding.key.id,
                    "tenant_id": finding.key.tenant_id,
                    "last4": finding.key.last4,
                }
            )
        )
    print(
        f"scanned {len(args.files)} file(s): {len(findings)} line(s) hold a live customer key",
        file=sys.stderr,
    )
    return 1 if findings else 0
