"""`metrux control …`: migrate, serve, worker, outbox, usage dead-letters, create-tenant.

Handlers import what they need when they run: `register` runs in every `metrux` process
(the proxy's included), which must not pay for the control plane's dependencies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import getpass
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import structlog

from core.logging import ACCESS_LOG_FORMAT
from core.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from control.audit.store import Actor

log = structlog.get_logger(__name__)
_T = TypeVar("_T")


def register(parts: Any) -> None:
    control = parts.add_parser("control", help="the control plane")
    commands = control.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cmd = commands.add_parser("migrate", help="create or upgrade the database schema")
    cmd.set_defaults(handler=run_migrate)

    cmd = commands.add_parser("serve", help="serve the control-plane HTTP API")
    cmd.add_argument("--host", default="127.0.0.1")
    cmd.add_argument("--port", type=int, default=8700)
    cmd.add_argument(
        "--no-workers",
        action="store_true",
        help="do not run the usage ingester and key monitor here "
        "(run `metrux control worker` elsewhere)",
    )
    cmd.set_defaults(handler=run_serve)

    cmd = commands.add_parser(
        "worker",
        aliases=["ingest"],
        help="run only the background workers: usage ingester and key monitor",
    )
    cmd.set_defaults(handler=run_worker)

    _register_retention(commands)

    cmd = commands.add_parser(
        "rewrap", help="re-wrap every stored key under another KEK (no downtime, resumable)"
    )
    cmd.add_argument("--to", required=True, choices=["local", "aws-kms"], help="target KEK")
    cmd.add_argument("--batch", type=int, default=100)
    cmd.set_defaults(handler=run_rewrap)

    cmd = commands.add_parser(
        "close-tenant", help="close a tenant: keys destroyed now, data anonymised after 30 days"
    )
    cmd.add_argument("tenant_id")
    cmd.set_defaults(handler=run_close_tenant)

    cmd = commands.add_parser(
        "create-operator", help="create a platform operator (read-only, audited cross-tenant)"
    )
    cmd.add_argument("email")
    cmd.set_defaults(handler=run_create_operator)

    cmd = commands.add_parser("outbox", help="print emails waiting for delivery (no provider set)")
    cmd.set_defaults(handler=run_outbox)

    cmd = commands.add_parser(
        "login-link",
        help="print a one-time console sign-in link for a member (15 minutes; audited)",
    )
    cmd.add_argument("email")
    cmd.add_argument("--tenant", default=None, help="the tenant, if the email is in several")
    cmd.add_argument(
        "--next", default=None, metavar="PATH", help="a console page to land on, e.g. /console/keys"
    )
    cmd.set_defaults(handler=run_login_link)

    _register_usage(commands)
    _register_audit(commands)

    from control.guard.cli import register as register_guard

    register_guard(commands, _operator)

    cmd = commands.add_parser("create-tenant", help="create a tenant and its first owner")
    cmd.add_argument("name")
    cmd.add_argument("--owner-email", required=True)
    cmd.set_defaults(handler=run_create_tenant)


def _register_retention(commands: Any) -> None:
    retention = commands.add_parser("retention", help="the retention policy")
    steps = retention.add_subparsers(dest="step", required=True, metavar="STEP")
    cmd = steps.add_parser("run", help="apply the retention rules once (serve runs this hourly)")
    cmd.add_argument("--dry-run", action="store_true", help="count what would change")
    cmd.add_argument(
        "--now", type=_timestamp, default=None, help="act as if it were this ISO 8601 time"
    )
    cmd.set_defaults(handler=run_retention)
    cmd = steps.add_parser("doc", help="print the retention table as docs/retention.md")
    cmd.set_defaults(handler=run_retention_doc)


def _register_usage(commands: Any) -> None:
    usage = commands.add_parser("usage", help="usage records")
    steps = usage.add_subparsers(dest="step", required=True, metavar="STEP")
    cmd = steps.add_parser(
        "dead-letters",
        help="print the usage records the ingester could not store, newest first, with why "
        "(JSON lines; the read is audited)",
    )
    cmd.add_argument("--tenant", default=None, help="only this tenant's")
    cmd.add_argument("--limit", type=_positive, default=100)
    cmd.add_argument("--payload", action="store_true", help="include each record as queued")
    cmd.set_defaults(handler=run_dead_letters)


def _register_audit(commands: Any) -> None:
    audit = commands.add_parser("audit", help="the audit log's hash chains")
    steps = audit.add_subparsers(dest="step", required=True, metavar="STEP")
    cmd = steps.add_parser(
        "verify",
        help="recompute every tenant's chain (or one's), archived rows included, and name "
        "the first row that was changed, removed or reordered; exit 1 if any chain is broken",
    )
    cmd.add_argument("--tenant", default=None, help="only this tenant's chain")
    cmd.set_defaults(handler=run_audit_verify)
    cmd = steps.add_parser(
        "retention-floor",
        help="raise the database's audit retention floor to DAYS (it never goes down: "
        "lowering it is the database owner's act, docs/audit.md)",
    )
    cmd.add_argument("days", type=int)
    cmd.set_defaults(handler=run_audit_retention_floor)
    cmd = steps.add_parser(
        "verify-export",
        help="check a file from GET /v1/audit/export offline (no database); exit 1 if broken",
    )
    cmd.add_argument("file", type=Path, help="the export (JSON lines), or - for stdin")
    cmd.add_argument(
        "--expect-head",
        default=None,
        metavar="SEQ:HASH",
        help="a head kept earlier from GET /v1/audit/head: the export must contain it",
    )
    cmd.set_defaults(handler=run_audit_verify_export)


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("give a whole number") from None
    if not 1 <= number <= 10_000:
        raise argparse.ArgumentTypeError("give a number from 1 to 10000")
    return number


def _timestamp(value: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "give an ISO 8601 time, e.g. 2027-06-01T00:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError("give a timezone, e.g. 2027-06-01T00:00:00Z")
    return parsed.astimezone(dt.UTC)


def _prepare_data_dir(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)


def _operator() -> Actor:
    from control.audit.actions import ActorType
    from control.audit.store import Actor

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, as in some containers
        user = "unknown"
    return Actor(type=ActorType.OPERATOR, id=f"cli:{user}")


def _fail(message: str) -> int:
    print(f"metrux: {message}", file=sys.stderr)
    return 1


def run_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from control.db import migrate
    from control.db.engine import create_engine

    _prepare_data_dir(settings)

    async def go() -> str:
        engine = create_engine(settings.effective_database_url)
        try:
            await migrate.upgrade(engine)
            return await migrate.current_revision(engine) or "none"
        finally:
            await engine.dispose()

    revision = asyncio.run(go())
    print(json.dumps({"event": "migrated", "revision": revision}))
    return 0


def _on_database(settings: Settings, work: Callable[[AsyncEngine], Awaitable[_T]]) -> _T:
    """Run `work` on an engine for the configured database, disposed of afterwards."""
    from control.db.engine import create_engine

    async def go() -> _T:
        engine = create_engine(settings.effective_database_url)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(go())


async def _is_current(settings: Settings) -> bool:
    from control.db import migrate
    from control.db.engine import create_engine

    engine = create_engine(settings.effective_database_url)
    try:
        return await migrate.current_revision(engine) == migrate.head_revision()
    finally:
        await engine.dispose()


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    from aiohttp import web

    from control.app import create_app
    from core.sentry import init_sentry

    _prepare_data_dir(settings)
    if not asyncio.run(_is_current(settings)):
        return _fail("the database schema is not current: run `metrux control migrate` first")
    init_sentry(settings, "metrux-control")
    log.info("control_plane_starting", host=args.host, port=args.port)
    web.run_app(
        create_app(settings, workers=not args.no_workers),
        host=args.host,
        port=args.port,
        print=None,
        access_log_format=ACCESS_LOG_FORMAT,
    )
    return 0


def run_worker(args: argparse.Namespace, settings: Settings) -> int:
    from redis.asyncio import Redis

    from control.audit.archive import archive_for
    from control.db.engine import create_engine
    from control.email.sender import make_sender
    from control.keys.monitor import KeyMonitor
    from control.keys.validation import ProcessKeyChecker
    from control.retention.worker import RetentionWorker
    from control.workers import run_workers
    from core.crypto.kek import load_kek
    from core.redis_names import RedisNames
    from core.redis_server import redis_url

    _prepare_data_dir(settings)
    if not asyncio.run(_is_current(settings)):
        return _fail("the database schema is not current: run `metrux control migrate` first")

    async def go() -> None:
        engine = create_engine(settings.effective_database_url)
        client = Redis.from_url(redis_url(settings))
        monitor = KeyMonitor(
            engine,
            load_kek(settings),
            ProcessKeyChecker(settings.upstream_url, settings.key_check_timeout_s),
            make_sender(settings, engine),
        )
        try:
            await run_workers(
                client,
                engine,
                RedisNames(settings.redis_prefix),
                monitor,
                RetentionWorker(
                    engine,
                    make_sender(settings, engine),
                    audit_archive=archive_for(settings),
                    audit_retention_days=settings.audit_retention_days,
                ),
            )
        finally:
            await client.aclose()
            await engine.dispose()

    log.info("control_workers_starting")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(go())
    return 0


def run_login_link(args: argparse.Namespace, settings: Settings) -> int:
    from control.identity.service import issue_login_link
    from control.web.errors import ApiError

    if not asyncio.run(_is_current(settings)):
        return _fail("the database schema is not current: run `metrux control migrate` first")

    def issue(engine: AsyncEngine) -> Awaitable[Any]:
        return issue_login_link(
            engine, _operator(), email=args.email, tenant_id=args.tenant,
            now=dt.datetime.now(dt.UTC),
        )  # fmt: skip

    try:
        link = _on_database(settings, issue)
    except ApiError as exc:
        return _fail(exc.message)
    landing = f"&next={quote(args.next, safe='/')}" if args.next else ""
    print(f"{settings.public_url}/console/signin?token={link.token}{landing}")
    print(f"single use, until {link.expires_at.isoformat()}", file=sys.stderr)
    return 0


def run_outbox(args: argparse.Namespace, settings: Settings) -> int:
    from control.email.sender import read_outbox

    for message in _on_database(settings, lambda engine: read_outbox(engine, _operator())):
        print(json.dumps(message, default=str))
    return 0


def run_dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    from control.usage.service import read_dead_letters

    if not asyncio.run(_is_current(settings)):
        return _fail("the database schema is not current: run `metrux control migrate` first")

    def read(engine: AsyncEngine) -> Awaitable[list[dict[str, object]]]:
        return read_dead_letters(engine, _operator(), tenant_id=args.tenant, limit=args.limit)

    for letter in _on_database(settings, read):
        if not args.payload:
            letter.pop("payload", None)
        print(json.dumps(letter, default=str))
    return 0


def run_audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    from control.audit.archival import verify_archived, with_archive
    from control.audit.archive import archive_for
    from control.audit.verification import verify_chains

    if not asyncio.run(_is_current(settings)):
        return _fail("the database schema is not current: run `metrux control migrate` first")
    archive = archive_for(settings)

    async def verify(engine: AsyncEngine) -> list[dict[str, Any]]:
        reports = []
        for report in await verify_chains(engine, args.tenant):
            if report.head.base_seq > 0:  # its oldest rows are in the archive
                report = with_archive(report, await verify_archived(archive, report.head))
            reports.append(report.as_json())
        return reports

    reports = _on_database(settings, verify)
    for report in reports:
        print(json.dumps(report))
    if args.tenant is not None and not reports:
        return _fail(f"no audit chain for tenant {args.tenant}")
    return 0 if all(r["ok"] for r in reports) else 1


def run_audit_retention_floor(args: argparse.Namespace, settings: Settings) -> int:
    from control.audit import store
    from control.audit.actions import AuditAction

    if args.days < 1:
        return _fail("give a number of days, 1 or more")
    if not asyncio.run(_is_current(settings)):
        return _fail("the database schema is not current: run `metrux control migrate` first")

    async def raise_floor(engine: AsyncEngine) -> int | str:
        async with engine.begin() as conn:
            floor = await store.retention_floor(conn)
            if args.days < floor:
                return f"the floor is {floor} days and only rises (docs/audit.md)"
            await store.raise_retention_floor(conn, args.days)
            await store.record(
                conn,
                _operator(),
                AuditAction.AUDIT_RETENTION_FLOOR,
                tenant_id=None,
                details={"from_days": floor, "to_days": args.days},
            )
        return int(args.days)

    result = _on_database(settings, raise_floor)
    if isinstance(result, str):
        return _fail(result)
    print(json.dumps({"retention_floor_days": result}))
    return 0


def run_audit_verify_export(args: argparse.Namespace, settings: Settings) -> int:
    from control.audit.verification import ExportError, verify_export

    expected = None
    if args.expect_head is not None:
        seq, _, digest = args.expect_head.partition(":")
        if not (seq.isascii() and seq.isdigit() and len(digest) == 64):
            return _fail("--expect-head takes SEQ:HASH, as GET /v1/audit/head gives them")
        expected = (int(seq), digest)
    try:
        if str(args.file) == "-":
            report = verify_export(sys.stdin, expected)
        else:
            with args.file.open(encoding="utf-8") as lines:
                report = verify_export(lines, expected)
    except (OSError, ExportError) as exc:
        return _fail(f"cannot verify {args.file}: {exc}")
    print(json.dumps(report.as_json()))
    return 0 if report.broken is None else 1


def run_create_tenant(args: argparse.Namespace, settings: Settings) -> int:
    from control.db.engine import create_engine
    from control.members.schemas import normalise_email
    from control.tenants.service import create_tenant

    name = args.name.strip()
    if not 1 <= len(name) <= 200:
        return _fail("NAME must be 1 to 200 characters")
    try:
        email = normalise_email(args.owner_email)
    except ValueError:
        return _fail("--owner-email must be an email address")
    if not asyncio.run(_is_current(settings)):
        return _fail("the database schema is not current: run `metrux control migrate` first")

    async def go() -> dict[str, str]:
        engine = create_engine(settings.effective_database_url)
        try:
            created = await create_tenant(engine, _operator(), name=name, owner_email=email)
        finally:
            await engine.dispose()
        return {
            "tenant_id": created.tenant.id,
            "owner_member_id": created.owner.member.id,
            "owner_token": created.owner.token,
        }

    print(json.dumps(asyncio.run(go())))
    return 0


def run_retention(args: argparse.Namespace, settings: Settings) -> int:
    from control.audit.archive import archive_for
    from control.db.engine import create_engine
    from control.email.sender import make_sender
    from control.retention.worker import RetentionWorker

    if not asyncio.run(_is_current(settings)):
        return _fail("the database schema is not current: run `metrux control migrate` first")

    async def go() -> dict[str, object]:
        engine = create_engine(settings.effective_database_url)
        try:
            worker = RetentionWorker(
                engine,
                make_sender(settings, engine),
                audit_archive=archive_for(settings),
                audit_retention_days=settings.audit_retention_days,
            )
            report = await worker.run(args.now, dry_run=args.dry_run)
        finally:
            await engine.dispose()
        return report.as_json()

    print(json.dumps(asyncio.run(go())))
    return 0


def run_retention_doc(args: argparse.Namespace, settings: Settings) -> int:
    from control.retention.rules import render_markdown

    sys.stdout.write(render_markdown())
    return 0


def run_close_tenant(args: argparse.Namespace, settings: Settings) -> int:
    from redis.asyncio import Redis

    from control.db.engine import create_engine
    from control.retention.rules import TENANT_GRACE
    from control.sessions.revocation import RevokeSessionsOfKey
    from control.sessions.signals import SignalPublisher
    from control.tenants.service import close_tenant
    from control.web.errors import ApiError
    from core.redis_names import RedisNames
    from core.redis_server import redis_url

    if not asyncio.run(_is_current(settings)):
        return _fail("the database schema is not current: run `metrux control migrate` first")

    async def go() -> dict[str, object]:
        engine = create_engine(settings.effective_database_url)
        client = Redis.from_url(redis_url(settings))
        try:
            signals = SignalPublisher(client, RedisNames(settings.redis_prefix))
            follow_up = RevokeSessionsOfKey(signals)
            closed = await close_tenant(engine, follow_up, _operator(), tenant_id=args.tenant_id)
            closed_at = dt.datetime.fromisoformat(str(closed["closed_at"]))
            return {**closed, "anonymised_after": (closed_at + TENANT_GRACE).isoformat()}
        finally:
            await client.aclose()
            await engine.dispose()

    try:
        print(json.dumps(asyncio.run(go())))
    except ApiError as exc:
        return _fail(exc.message)
    return 0


def run_create_operator(args: argparse.Namespace, settings: Settings) -> int:
    from control.db.engine import create_engine
    from control.members.schemas import normalise_email
    from control.tenants.operators import create_operator

    try:
        email = normalise_email(args.email)
    except ValueError:
        return _fail("EMAIL must be an email address")
    if not asyncio.run(_is_current(settings)):
        return _fail("the database schema is not current: run `metrux control migrate` first")

    async def go() -> dict[str, str]:
        engine = create_engine(settings.effective_database_url)
        try:
            return await create_operator(engine, _operator(), email=email)
        finally:
            await engine.dispose()

    print(json.dumps(asyncio.run(go())))
    return 0


def run_rewrap(args: argparse.Namespace, settings: Settings) -> int:
    from control.db.engine import create_engine
    from control.keys.rewrap import rewrap_all
    from core.crypto.kek import KekError, KekRing, load_kek, provider_for
    from core.settings import KekProviderName

    if not asyncio.run(_is_current(settings)):
        return _fail("the database schema is not current: run `metrux control migrate` first")

    async def go() -> dict[str, object]:
        engine = create_engine(settings.effective_database_url)
        try:
            # Wrap under the target; read with everything the settings configure.
            target = provider_for(settings, KekProviderName(args.to))
            ring = KekRing(target, (load_kek(settings),))
            report = await rewrap_all(engine, ring, _operator(), batch=args.batch)
        finally:
            await engine.dispose()
        return {"event": "rewrapped", "to": ring.kek_id, **dataclasses.asdict(report)}

    try:
        print(json.dumps(asyncio.run(go())))
    except KekError as exc:
        return _fail(str(exc))
    return 0
