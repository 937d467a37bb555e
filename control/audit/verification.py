"""Verifying the audit chains in the database, and exporting a chain for offline checks.

`metrux control audit verify [--tenant T]` walks each chain in pages and names the first
row that was changed, removed or reordered. `GET /v1/audit/export` writes a tenant's chain
as JSON lines: a head line, then each row's stored, hashed values; `metrux control audit
verify-export FILE` checks such a file with no database (docs/audit.md).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from control.audit import store
from control.audit.chain import (
    CHAINED_COLUMNS,
    Break,
    ChainWalk,
    Head,
    canonical_value,
    chain_of,
)

PAGE = 1000


@dataclasses.dataclass(frozen=True, slots=True)
class ChainReport:
    head: Head
    rows_checked: int
    broken: Break | None

    def as_json(self) -> dict[str, Any]:
        return {
            "chain": self.head.chain,
            "head": {"seq": self.head.seq, "hash": self.head.hash},
            "rows_checked": self.rows_checked,
            "ok": self.broken is None,
            "first_break": None if self.broken is None else self.broken.describe(),
        }


async def verify_chains(engine: AsyncEngine, tenant_id: str | None = None) -> list[ChainReport]:
    """Every chain (or the tenant's), walked from its base to its head."""
    async with engine.connect() as conn:
        heads = await store.chain_heads(conn, chain_of(tenant_id) if tenant_id else None)
        reports = []
        for head in heads:
            walk = ChainWalk(head)
            broken, after = None, head.base_seq
            while broken is None:
                rows = await store.chain_rows(conn, head.chain, after_seq=after, limit=PAGE)
                broken = next((b for row in rows if (b := walk.feed(row)) is not None), None)
                if not rows or broken is not None:
                    break
                after = int(rows[-1]["chain_seq"])
            reports.append(ChainReport(head, walk.checked, broken or walk.finish()))
    return reports


def head_line(head: Head) -> dict[str, Any]:
    return {
        "kind": "head",
        "chain": head.chain,
        "seq": head.seq,
        "hash": head.hash,
        "base_seq": head.base_seq,
        "base_hash": head.base_hash,
    }


def export_line(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as the export writes it: the hashed values, canonical, plus id and hash."""
    line = {name: canonical_value(row[name]) for name in CHAINED_COLUMNS if name in row}
    return {"kind": "row", "id": row["id"], **line, "row_hash": row["row_hash"]}


async def export_chain(engine: AsyncEngine, tenant_id: str) -> AsyncIterator[dict[str, Any]]:
    """The tenant's chain as export lines: the head first, then every row in chain order."""
    async with engine.connect() as conn:
        heads = await store.chain_heads(conn, chain_of(tenant_id))
        if not heads:
            return
        head = heads[0]
        yield head_line(head)
        after = head.base_seq
        while after < head.seq:
            rows = await store.chain_rows(conn, head.chain, after_seq=after, limit=PAGE)
            if not rows:
                return
            for row in rows:
                if int(row["chain_seq"]) > head.seq:  # appended since the head was read
                    return
                yield export_line(row)
            after = int(rows[-1]["chain_seq"])


class ExportError(ValueError):
    """The file is not an audit export."""


def verify_export(lines: Iterable[str], expected: tuple[int, str] | None = None) -> ChainReport:
    """Check an export offline: every row links to the one before and matches its hash, the
    rows end at the head the file starts with, and (if given) the row at `expected`'s seq
    has `expected`'s hash: a head the customer kept earlier is still in the chain."""
    walk: ChainWalk | None = None
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except ValueError:
            raise ExportError(f"line {number} is not JSON") from None
        if walk is None:
            if not isinstance(line, dict) or line.get("kind") != "head":
                raise ExportError("the first line must be the chain's head")
            walk = ChainWalk(
                Head(line["chain"], line["seq"], line["hash"], line["base_seq"], line["base_hash"])
            )
            continue
        if not isinstance(line, dict) or line.get("kind") != "row":
            raise ExportError(f"line {number} is not a row")
        if (broken := walk.feed(line) or _against(walk.head, line, expected)) is not None:
            return ChainReport(walk.head, walk.checked, broken)
    if walk is None:
        raise ExportError("the file is empty")
    if expected is not None and not walk.head.base_seq < expected[0] <= walk.head.seq:
        return ChainReport(
            walk.head,
            walk.checked,
            Break(walk.head.chain, expected[0], None, "removed", "the kept head is not here"),
        )
    return ChainReport(walk.head, walk.checked, walk.finish())


def _against(head: Head, line: dict[str, Any], expected: tuple[int, str] | None) -> Break | None:
    if expected is None or line["chain_seq"] != expected[0] or line["row_hash"] == expected[1]:
        return None
    return Break(
        head.chain,
        expected[0],
        line.get("id"),
        "changed",
        "the chain no longer holds the head kept earlier: history was rewritten",
    )
