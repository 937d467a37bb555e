"""Audit retention (issue 18): rows past the target are archived (a directory, or S3 on
moto's server with Object Lock), then removed through the one DELETE the database allows;
verification still runs from the first row, across the archived boundary."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from control.audit import store as audit
from control.audit.actions import AuditAction
from control.audit.archival import archive_due, verify_archived, with_archive
from control.audit.archive import DirectoryArchive, S3Archive
from control.audit.verification import verify_chains
from control.db.schema import audit_chains, audit_events, audit_policy
from control.email.sender import OutboxSender
from control.retention.worker import RetentionWorker
from tests.control.test_cli import _env
from tests.control.test_cli import run as run
from tests.factories import OPERATOR

# What these tests check depends on the database: they run on SQLite and PostgreSQL.
pytestmark = pytest.mark.both_databases

NOW = dt.datetime.now(dt.UTC)
DAYS = dt.timedelta(days=1)


async def _chain_of_ages(engine: AsyncEngine, ages_in_days: list[int]) -> str:
    """A tenant's chain with one row per age, oldest first."""
    tenant_id = str(uuid.uuid4())
    async with engine.begin() as conn:
        for n, age in enumerate(ages_in_days):
            await audit.record(
                conn, OPERATOR, AuditAction.KEY_UPLOAD, tenant_id=tenant_id,
                target_id=f"row{n}", now=NOW - age * DAYS,
            )  # fmt: skip
    return tenant_id


async def _report(engine: AsyncEngine, archive: Any, tenant_id: str) -> Any:
    [report] = await verify_chains(engine, tenant_id)
    return with_archive(report, await verify_archived(archive, report.head))


async def _targets(engine: AsyncEngine, tenant_id: str) -> list[str]:
    async with engine.connect() as conn:
        rows = await audit.chain_rows(conn, tenant_id, after_seq=0, limit=100)
    return [r["target_id"] for r in rows]


async def test_rows_past_the_target_are_archived_then_removed(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    tenant_id = await _chain_of_ages(engine, [900, 800, 740, 700, 10])
    archive = DirectoryArchive(tmp_path / "archive")
    [done] = await archive_due(engine, archive, retention_days=730, now=NOW)
    assert (done.chain, done.rows, done.through_seq) == (tenant_id, 3, 3)
    # Left in the database: the two younger rows and the archive's own audit row.
    assert await _targets(engine, tenant_id) == ["row3", "row4", done.name[:100]]
    [name] = await archive.names(tenant_id)
    lines = [json.loads(x) for x in gzip.decompress(await archive.get(name)).splitlines()]
    assert lines[0]["kind"] == "head"
    assert (lines[0]["base_seq"], lines[0]["seq"]) == (0, 3)
    assert [line["target_id"] for line in lines[1:]] == ["row0", "row1", "row2"]
    assert not (tmp_path / "archive" / name).stat().st_mode & 0o222  # read-only
    report = await _report(engine, archive, tenant_id)
    assert (report.broken, report.rows_checked) == (None, 6)  # archived rows included
    assert await archive_due(engine, archive, retention_days=730, now=NOW) == []


async def test_the_database_floor_wins_over_a_shorter_setting(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    tenant_id = await _chain_of_ages(engine, [900, 500, 10])
    archive = DirectoryArchive(tmp_path / "archive")
    [done] = await archive_due(engine, archive, retention_days=365, now=NOW)
    assert done.rows == 1  # 900 days only: the floor is 730
    async with engine.begin() as conn:
        await audit.raise_retention_floor(conn, 1000)
    assert await archive_due(engine, archive, retention_days=365, now=NOW) == []
    assert "row1" in await _targets(engine, tenant_id)


async def test_only_the_retention_path_may_delete_and_only_archived_old_rows(
    engine: AsyncEngine,
) -> None:
    tenant_id = await _chain_of_ages(engine, [900, 10])
    refused = [
        # An old row not recorded as archived.
        delete(audit_events).where(
            audit_events.c.chain == tenant_id, audit_events.c.chain_seq == 1
        ),
        # Moving the base to a recent row, to delete it next.
        update(audit_chains)
        .where(audit_chains.c.chain == tenant_id)
        .values(base_seq=2, base_hash=audit_chains.c.head_hash),
        # Moving the base backwards, or deleting a chain's head.
        update(audit_chains).where(audit_chains.c.chain == tenant_id).values(seq=0),
        delete(audit_chains).where(audit_chains.c.chain == tenant_id),
        # Lowering the floor, or removing it.
        update(audit_policy).values(retention_days=1),
        delete(audit_policy),
    ]
    for statement in refused:
        with pytest.raises(DBAPIError):
            async with engine.begin() as conn:
                await conn.execute(statement)
    async with engine.connect() as conn:
        assert await audit.retention_floor(conn) == 730
    assert (await verify_chains(engine, tenant_id))[0].broken is None


async def test_a_changed_or_missing_archive_is_named(engine: AsyncEngine, tmp_path: Path) -> None:
    tenant_id = await _chain_of_ages(engine, [900, 850, 800, 10])
    archive = DirectoryArchive(tmp_path / "archive")
    await archive_due(engine, archive, retention_days=730, now=NOW - 825 * DAYS + 730 * DAYS)
    await archive_due(engine, archive, retention_days=730, now=NOW)
    first, second = await archive.names(tenant_id)
    path = tmp_path / "archive" / first
    original = path.read_bytes()
    lines = gzip.decompress(original).decode().splitlines()
    row = json.loads(lines[1])
    lines[1] = json.dumps({**row, "target_id": "rewritten"})
    path.chmod(0o600)
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    broken = (await _report(engine, archive, tenant_id)).broken
    assert (broken.chain_seq, broken.kind) == (1, "changed")
    assert first in broken.detail
    path.unlink()
    broken = (await _report(engine, archive, tenant_id)).broken
    assert broken.kind == "removed"
    assert second in broken.detail


async def test_the_retention_worker_archives_audit_rows(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    tenant_id = await _chain_of_ages(engine, [900, 10])
    archive = DirectoryArchive(tmp_path / "archive")
    worker = RetentionWorker(engine, OutboxSender(engine), audit_archive=archive)
    assert (await worker.run(NOW, dry_run=True)).counts["audit_rows_archived"] == 0
    assert (await worker.run(NOW)).counts["audit_rows_archived"] == 1
    assert len(await archive.names(tenant_id)) == 1


# --- S3, played by moto's server, with Object Lock -----------------------------------------


async def test_archives_go_to_s3_under_object_lock(
    engine: AsyncEngine, kms_server: str, aws_env: None
) -> None:
    import aioboto3

    bucket = f"metrux-audit-{uuid.uuid4().hex[:8]}"
    async with aioboto3.Session().client("s3", endpoint_url=kms_server) as s3:
        await s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    archive = S3Archive(bucket, "prod/audit", kms_server)
    tenant_id = await _chain_of_ages(engine, [900, 800, 10])
    [done] = await archive_due(engine, archive, retention_days=730, now=NOW)
    assert done.rows == 2
    [name] = await archive.names(tenant_id)
    async with aioboto3.Session().client("s3", endpoint_url=kms_server) as s3:
        stored = await s3.head_object(Bucket=bucket, Key=f"prod/audit/{name}")
        with pytest.raises(Exception, match="AccessDenied"):  # locked: not even the owner
            await s3.delete_object(
                Bucket=bucket, Key=f"prod/audit/{name}", VersionId=stored["VersionId"]
            )
    assert stored["ObjectLockMode"] == "COMPLIANCE"
    report = await _report(engine, archive, tenant_id)
    assert (report.broken, report.rows_checked) == (None, 4)
    async with engine.connect() as conn:
        left = await conn.execute(
            select(audit_events.c.chain_seq).where(audit_events.c.chain == tenant_id)
        )
        assert sorted(r.chain_seq for r in left) == [3, 4]


def test_the_floor_only_rises_from_the_command_line(
    run: Any, tmp_path: Path, database_url: str
) -> None:
    env = _env(tmp_path, database_url)
    assert run(env, "control", "migrate")[0] == 0
    code, out, _ = run(env, "control", "audit", "retention-floor", "1000")
    assert (code, json.loads(out)) == (0, {"retention_floor_days": 1000})
    code, _, err = run(env, "control", "audit", "retention-floor", "900")
    assert code == 1
    assert "only rises" in err
