"""Audit retention: archive each chain's rows past the retention target, then remove them
through the one DELETE the database allows (migration 0015); and verify a chain across the
archived boundary.

The target is the longer of METRUX_AUDIT_RETENTION_DAYS and the database's own floor
(`audit_policy`). For each chain, the oldest rows past it (a contiguous run from the chain's
base, verified first: a broken chain is reported, not archived) are written as one archive
object (control/audit/archive.py), then, in one transaction, the chain's base moves to the
last of them and they are deleted, and an `audit:archive` row records it. The object is
written first: a crash between the two leaves rows in both places, and the next run writes
the same object again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import json

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from control.audit import store
from control.audit.actions import ActorType, AuditAction
from control.audit.archive import ArchiveStore, object_name
from control.audit.chain import GENESIS, PLATFORM_CHAIN, Break, ChainWalk, Head
from control.audit.store import Actor
from control.audit.verification import (
    ChainReport,
    ExportError,
    export_line,
    head_line,
    verify_export,
)

log = structlog.get_logger(__name__)

ARCHIVER = Actor(ActorType.SYSTEM, "audit-archive")
BATCH = 5000


@dataclasses.dataclass(frozen=True, slots=True)
class Archived:
    chain: str
    rows: int
    through_seq: int
    name: str


async def archive_due(
    engine: AsyncEngine,
    archive: ArchiveStore,
    *,
    retention_days: int,
    now: dt.datetime,
    batch: int = BATCH,
) -> list[Archived]:
    """Archive and remove every chain's rows older than the retention target."""
    async with engine.connect() as conn:
        days = max(retention_days, await store.retention_floor(conn))
        heads = await store.chain_heads(conn)
    cutoff = now - dt.timedelta(days=days)
    done: list[Archived] = []
    for head in heads:
        while step := await _archive_next(engine, archive, head.chain, cutoff, days, batch):
            done.append(step)
            if step.rows < batch:
                break
    return done


async def _archive_next(
    engine: AsyncEngine,
    archive: ArchiveStore,
    chain: str,
    cutoff: dt.datetime,
    days: int,
    batch: int,
) -> Archived | None:
    async with engine.connect() as conn:
        [head] = await store.chain_heads(conn, chain)
        rows = await store.archivable_rows(
            conn, chain, after_seq=head.base_seq, before=cutoff, limit=batch
        )
    if not rows:
        return None
    walk = ChainWalk(head)
    broken = next((b for row in rows if (b := walk.feed(row)) is not None), None)
    if broken is not None:
        log.error("audit_chain_broken_not_archived", where=broken.describe())
        return None
    last = rows[-1]
    through, through_hash = int(last["chain_seq"]), str(last["row_hash"])
    name = object_name(chain, head.base_seq + 1, through)
    lines = [head_line(Head(chain, through, through_hash, head.base_seq, head.base_hash))]
    lines += [export_line(row) for row in rows]
    data = gzip.compress(
        b"".join(json.dumps(line, separators=(",", ":")).encode() + b"\n" for line in lines),
        mtime=0,
    )
    await archive.put(name, data, retain_until=last["occurred_at"] + dt.timedelta(days=2 * days))
    async with engine.begin() as conn:
        if not await store.move_chain_base(
            conn, chain, from_seq=head.base_seq, to_seq=through, to_hash=through_hash
        ):
            return None  # another worker archived these
        deleted = await store.delete_archived(conn, chain, through_seq=through)
        await store.record(
            conn,
            ARCHIVER,
            AuditAction.AUDIT_ARCHIVE,
            tenant_id=None if chain == PLATFORM_CHAIN else chain,
            target_type="audit_archive",
            target_id=name[:100],
            details={"rows": deleted, "through_seq": through, "object": name},
        )
    log.info("audit_rows_archived", chain=chain, rows=deleted, through_seq=through)
    return Archived(chain, deleted, through, name)


async def verify_archived(archive: ArchiveStore, head: Head) -> tuple[int, Break | None]:
    """Walk a chain's archive objects from its first row to its base in the database: each
    object verifies on its own and starts where the one before it ended."""
    seq, digest, checked = 0, GENESIS, 0
    for name in await archive.names(head.chain):
        try:
            lines = gzip.decompress(await archive.get(name)).decode().splitlines()
            report = verify_export(lines)
        except (OSError, ValueError, ExportError) as exc:
            return checked, Break(head.chain, seq + 1, None, "changed", f"{name}: {exc}")
        if (report.head.base_seq, report.head.base_hash) != (seq, digest):
            return checked, Break(
                head.chain, seq + 1, None, "removed", f"{name} does not follow chain_seq {seq}"
            )
        checked += report.rows_checked
        if report.broken is not None:
            return checked, dataclasses.replace(
                report.broken, detail=f"{name}: {report.broken.detail}"
            )
        seq, digest = report.head.seq, report.head.hash
    if (seq, digest) != (head.base_seq, head.base_hash):
        return checked, Break(
            head.chain,
            seq + 1,
            None,
            "removed",
            f"the archive ends at chain_seq {seq}; the database starts after {head.base_seq}",
        )
    return checked, None


def with_archive(report: ChainReport, archived: tuple[int, Break | None]) -> ChainReport:
    checked, broken = archived
    return ChainReport(report.head, report.rows_checked + checked, broken or report.broken)
