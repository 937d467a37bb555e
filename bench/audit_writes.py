"""What an audit row costs now that it is chained and sealed, against a plain INSERT of the
same row in the same run, on a scratch Postgres database (or SQLite with --sqlite).

    .venv/bin/python -m bench.audit_writes [--rows 2000] [--database postgresql://…]

It prints, per row and one transaction each: wall time and this process's CPU for a plain
INSERT (the baseline), for `audit.record` of a member's row (chain head taken, address and
user agent sealed under the member's key), and per row of an access-log batch (200 rows a
transaction), with each as a ratio to the baseline. Not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from control.audit import store
from control.audit.access import Access, AccessLog
from control.audit.actions import ActorType, AuditAction
from control.audit.store import Actor
from control.db import migrate
from control.db.engine import create_engine
from control.db.schema import audit_events
from core.settings import parse_database_url

MEMBER = Actor(ActorType.MEMBER, "m-bench", ip="198.51.100.9", user_agent="BenchBrowser/1")


async def _timed(rows: int, one: Callable[[int], Awaitable[None]]) -> tuple[float, float]:
    """Mean wall and CPU milliseconds per call of `one`."""
    wall, cpu = time.perf_counter(), time.process_time()
    for n in range(rows):
        await one(n)
    return (
        (time.perf_counter() - wall) * 1000 / rows,
        (time.process_time() - cpu) * 1000 / rows,
    )


async def measure(engine: AsyncEngine, rows: int) -> dict[str, tuple[float, float]]:
    tenant = str(uuid.uuid4())
    now = dt.datetime.now(dt.UTC)

    async def plain(n: int) -> None:
        async with engine.begin() as conn:
            await conn.execute(
                insert(audit_events).values(
                    occurred_at=now, tenant_id=tenant, actor_type="member", actor_id="m-bench",
                    action="key:upload", outcome="success", ip=MEMBER.ip,
                    user_agent=MEMBER.user_agent, details=json.dumps({"n": n}),
                )
            )  # fmt: skip

    async def chained(n: int) -> None:
        async with engine.begin() as conn:
            await store.record(
                conn, MEMBER, AuditAction.KEY_UPLOAD, tenant_id=tenant, details={"n": n}
            )

    access_log = AccessLog(engine, batch=200, max_pending=rows + 1)

    async def noted(n: int) -> None:
        await access_log.note(
            Access(tenant, MEMBER, "GET", "/v1/keys", {}, 200, dt.datetime.now(dt.UTC))
        )
        if access_log.pending >= 200:
            await access_log.flush()

    results = {
        "plain INSERT (baseline)": await _timed(rows, plain),
        "audit.record (chained, sealed)": await _timed(rows, chained),
        "access row (batched)": await _timed(rows, noted),
    }
    await access_log.flush()
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--database", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--sqlite", action="store_true", help="a scratch SQLite file instead")
    args = parser.parse_args()
    if args.sqlite:
        url = f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/bench.db"
        admin, scratch = None, None
    else:
        admin = create_engine(parse_database_url(args.database), isolation_level="AUTOCOMMIT")
        scratch = f"metrux_bench_{uuid.uuid4().hex[:8]}"
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{scratch}"'))
        url = parse_database_url(args.database).rsplit("/", 1)[0] + f"/{scratch}"
    engine = create_engine(url)
    try:
        await migrate.upgrade(engine)
        results = await measure(engine, args.rows)
    finally:
        await engine.dispose()
        if admin is not None:
            async with admin.connect() as conn:
                await conn.execute(text(f'DROP DATABASE "{scratch}" WITH (FORCE)'))
            await admin.dispose()
    base_wall, base_cpu = results["plain INSERT (baseline)"]
    print(f"{args.rows} rows each, {'SQLite' if args.sqlite else 'Postgres'}")
    print(f"{'':34} {'wall ms':>8} {'cpu ms':>8} {'wall x':>7} {'cpu x':>7}")
    for name, (wall, cpu) in results.items():
        print(f"{name:34} {wall:8.3f} {cpu:8.3f} {wall / base_wall:7.2f} {cpu / base_cpu:7.2f}")


if __name__ == "__main__":
    asyncio.run(main())
