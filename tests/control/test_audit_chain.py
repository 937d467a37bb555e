"""The audit log's hash chains (issue 18): each tenant's rows chain by SHA-256, and the
verifier names the first row the database owner changed, removed or reordered, with the
append-only trigger disabled; an export verifies offline, against a head kept earlier."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control import appkeys
from control.audit import store as audit
from control.audit.actions import AuditAction
from control.audit.chain import GENESIS, row_hash
from control.audit.verification import export_line, verify_chains, verify_export
from control.db.schema import audit_events
from tests.control.test_cli import _env
from tests.control.test_cli import run as run
from tests.factories import OPERATOR, TenantFixture, make_tenant

# What these tests check depends on the database: they run on SQLite and PostgreSQL.
pytestmark = pytest.mark.both_databases


async def _seed(engine: AsyncEngine, tenant: TenantFixture, n: int = 5) -> list[int]:
    """n more rows in the tenant's chain (after tenant:create and member:create)."""
    ids = []
    async with engine.begin() as conn:
        for i in range(n):
            ids.append(
                await audit.record(
                    conn,
                    OPERATOR,
                    AuditAction.KEY_UPLOAD,
                    tenant_id=tenant.tenant_id,
                    target_id=f"k{i}",
                    details={"n": i},
                )
            )
    return ids


async def _as_owner_without_the_guard(engine: AsyncEngine, statements: list[Any]) -> None:
    """The database owner disables the append-only trigger and rewrites history."""
    async with engine.begin() as conn:
        await _disable_guard(conn)
        for statement in statements:
            await conn.execute(statement)


async def _disable_guard(conn: AsyncConnection) -> None:
    if conn.dialect.name == "sqlite":
        await conn.execute(text("DROP TRIGGER audit_events_guard_update"))
        await conn.execute(text("DROP TRIGGER audit_events_refuse_delete"))
    else:
        await conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_guard"))


async def _report(engine: AsyncEngine, tenant: TenantFixture) -> Any:
    [report] = await verify_chains(engine, tenant.tenant_id)
    return report


async def test_an_untouched_chain_verifies_and_links_every_row(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    other = await make_tenant(engine, "Other")
    await _seed(engine, tenant)
    report = await _report(engine, tenant)
    assert (report.broken, report.rows_checked, report.head.seq) == (None, 7, 7)
    async with engine.connect() as conn:
        rows = await audit.chain_rows(conn, tenant.tenant_id, after_seq=0, limit=100)
    assert rows[0]["prev_hash"] == GENESIS
    assert [r["prev_hash"] for r in rows[1:]] == [r["row_hash"] for r in rows[:-1]]
    assert all(row_hash(r) == r["row_hash"] for r in rows)
    assert (await _report(engine, other)).rows_checked == 2  # its own chain


async def test_an_update_by_the_owner_is_named(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    ids = await _seed(engine, tenant)
    assert (await _report(engine, tenant)).broken is None
    changed = update(audit_events).where(audit_events.c.id == ids[2])
    await _as_owner_without_the_guard(engine, [changed.values(details='{"n": 99}')])
    broken = (await _report(engine, tenant)).broken
    assert (broken.row_id, broken.chain_seq, broken.kind) == (ids[2], 5, "changed")


async def test_a_delete_by_the_owner_is_named(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    ids = await _seed(engine, tenant)
    await _as_owner_without_the_guard(
        engine, [delete(audit_events).where(audit_events.c.id == ids[1])]
    )
    broken = (await _report(engine, tenant)).broken
    assert (broken.chain_seq, broken.kind) == (4, "removed")
    assert broken.row_id == ids[2]  # the row found where chain_seq 4 should be


async def test_a_reorder_by_the_owner_is_named(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    ids = await _seed(engine, tenant)
    seq = audit_events.c.chain_seq
    await _as_owner_without_the_guard(
        engine,
        [  # swap rows 4 and 5 through a free value (the pair is unique)
            update(audit_events).where(audit_events.c.id == ids[1]).values(chain_seq=-1),
            update(audit_events).where(audit_events.c.id == ids[2]).values(chain_seq=4),
            update(audit_events).where(seq == -1).values(chain_seq=5),
        ],
    )
    broken = (await _report(engine, tenant)).broken
    assert (broken.row_id, broken.chain_seq, broken.kind) == (ids[2], 4, "reordered")


async def test_removing_the_newest_rows_is_caught_at_the_head(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    ids = await _seed(engine, tenant)
    await _as_owner_without_the_guard(
        engine, [delete(audit_events).where(audit_events.c.id.in_(ids[-2:]))]
    )
    broken = (await _report(engine, tenant)).broken
    assert (broken.chain_seq, broken.kind) == (6, "truncated")


async def test_concurrent_appends_to_one_chain_stay_one_chain(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    await asyncio.gather(*(_seed(engine, tenant, 3) for _ in range(8)))
    report = await _report(engine, tenant)
    assert (report.broken, report.rows_checked) == (None, 2 + 8 * 3)


async def test_the_export_verifies_offline_and_against_a_kept_head(
    client: Any, engine: AsyncEngine
) -> None:
    tenant = await make_tenant(engine)
    await _seed(engine, tenant)
    async with client.get("/v1/audit/head", headers=tenant.auth) as r:
        kept = await r.json()
    assert (kept["chain"], kept["seq"]) == (tenant.tenant_id, 7)
    # The log moves on after the head was kept: the head read's own access row (written
    # now rather than by the background flush, whenever that runs), and two more rows.
    await client.app[appkeys.access_log].flush()
    await _seed(engine, tenant, 2)
    async with client.get("/v1/audit/export", headers=tenant.auth) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "application/x-ndjson"
        lines = (await r.text()).splitlines()
    report = verify_export(lines, (kept["seq"], kept["hash"]))
    assert (report.broken, report.rows_checked, report.head.seq) == (None, 10, 10)

    # One value changed in the file: named.
    rows = [json.loads(line) for line in lines]
    tampered = [dict(r) for r in rows]
    tampered[3]["outcome"] = "failure"
    broken = verify_export([json.dumps(r) for r in tampered]).broken
    assert (broken.chain_seq, broken.kind) == (3, "changed")

    # History rewritten whole (every hash recomputed): consistent, but not the kept head.
    forged = _rewritten(rows, at_seq=4, outcome="failure")
    assert verify_export(forged).broken is None
    broken = verify_export(forged, (kept["seq"], kept["hash"])).broken
    assert (broken.chain_seq, broken.kind) == (7, "changed")


def _rewritten(rows: list[dict[str, Any]], *, at_seq: int, outcome: str) -> list[str]:
    head, body = rows[0], rows[1:]
    prev = head["base_hash"]
    out = []
    for row in body:
        row = {**row, "prev_hash": prev}
        if row["chain_seq"] == at_seq:
            row["outcome"] = outcome
        row["row_hash"] = row_hash(row)
        prev = row["row_hash"]
        out.append(row)
    return [json.dumps({**head, "hash": prev})] + [json.dumps(r) for r in out]


async def test_export_lines_are_the_hashed_values(engine: AsyncEngine) -> None:
    tenant = await make_tenant(engine)
    async with engine.connect() as conn:
        [row, _] = await audit.chain_rows(conn, tenant.tenant_id, after_seq=0, limit=10)
        [head] = await audit.chain_heads(conn, tenant.tenant_id)
    line = export_line(row)
    assert row_hash(line) == row["row_hash"] == line["row_hash"]
    assert head.seq == 2
    assert dataclasses.asdict(head)["chain"] == tenant.tenant_id


def test_the_cli_verifies_and_exits_1_on_a_break(
    run: Any, tmp_path: Path, database_url: str
) -> None:
    env = _env(tmp_path, database_url)
    assert run(env, "control", "migrate")[0] == 0
    code, out, _ = run(
        env, "control", "create-tenant", "Acme", "--owner-email", "owner@example.com"
    )
    assert code == 0
    tenant_id = json.loads(out)["tenant_id"]
    code, out, _ = run(env, "control", "audit", "verify", "--tenant", tenant_id)
    assert code == 0
    assert json.loads(out)["ok"] is True

    async def tamper() -> None:
        from control.db.engine import create_engine

        engine = create_engine(_async(database_url))
        await _as_owner_without_the_guard(
            engine,
            [
                update(audit_events)
                .where(audit_events.c.chain == tenant_id, audit_events.c.chain_seq == 1)
                .values(actor_id="someone-else")
            ],
        )
        await engine.dispose()

    asyncio.run(tamper())
    code, out, _ = run(env, "control", "audit", "verify")
    assert code == 1
    broken = [r for r in map(json.loads, out.splitlines()) if not r["ok"]]
    assert [r["chain"] for r in broken] == [tenant_id]
    assert "chain_seq 1) changed" in broken[0]["first_break"]


def _async(url: str) -> str:
    from core.settings import parse_database_url

    return parse_database_url(url)
