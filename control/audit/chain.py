"""The audit log's hash chains: pure functions, shared by the store, the verifier and the
offline check of an export (`metrux control audit verify-export`).

Each tenant's rows form one chain (rows without a tenant form the `platform` chain). Row n
stores `chain_seq` = n, `prev_hash` = row n-1's `row_hash` (GENESIS for the first), and
`row_hash` = SHA-256 over `prev_hash`, a newline, and the row's canonical content: its
stored columns as compact JSON with sorted keys, NULLs left out, bytes as hex, times as
UTC ISO 8601 with microseconds. Leaving NULLs out keeps old rows' hashes valid when a
nullable column is added. Changing, removing or reordering a row breaks the chain at that
row; removing the newest rows is caught against the head kept in `audit_chains`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from typing import Any

GENESIS = "0" * 64
PLATFORM_CHAIN = "platform"

# The stored columns a row's hash covers: all but its id (assigned by the database), the
# two foreign keys a hard-delete sets NULL (their *_text copies are covered), and the hash.
CHAINED_COLUMNS = (
    "chain",
    "chain_seq",
    "prev_hash",
    "occurred_at",
    "tenant_id",
    "actor_type",
    "actor_id",
    "action",
    "outcome",
    "target_type",
    "target_id",
    "session_id_text",
    "candidate_id_text",
    "ip",
    "user_agent",
    "ip_sealed",
    "user_agent_sealed",
    "actor_subject",
    "actor_sealed",
    "details_subject",
    "details_sealed",
    "request_id",
    "details",
)


def chain_of(tenant_id: str | None) -> str:
    return tenant_id or PLATFORM_CHAIN


def canonical_value(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:  # stored UTC; some drivers hand it back naive
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


def canonical(row: Mapping[str, Any]) -> bytes:
    content = {
        name: canonical_value(row[name]) for name in CHAINED_COLUMNS if row.get(name) is not None
    }
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def row_hash(row: Mapping[str, Any]) -> str:
    """The hash a row must store: over its prev_hash and its canonical content."""
    digest = hashlib.sha256(str(row["prev_hash"]).encode())
    digest.update(b"\n")
    digest.update(canonical(row))
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class Break:
    """Where a chain stops verifying: the first row that is not what was written."""

    chain: str
    chain_seq: int
    row_id: int | None
    kind: str  # changed, removed, reordered, truncated
    detail: str

    def describe(self) -> str:
        where = (
            f"row {self.row_id} (chain_seq {self.chain_seq})"
            if self.row_id
            else (f"chain_seq {self.chain_seq}")
        )
        return f"chain {self.chain}: {where} {self.kind}: {self.detail}"


@dataclasses.dataclass(frozen=True, slots=True)
class Head:
    """A chain's newest row (seq 0 and GENESIS when it has none), and where it starts:
    rows up to base_seq were archived, and base_hash is the last archived row's hash."""

    chain: str
    seq: int
    hash: str
    base_seq: int = 0
    base_hash: str = GENESIS


class ChainWalk:
    """Verifies one chain row by row, in chain_seq order, from head.base_seq + 1 to head.seq
    (rows can come in pages): `feed` each row, then `finish`. Each returns the first break
    found, if any; after a break the walk is over."""

    def __init__(self, head: Head) -> None:
        self.head = head
        self.checked = 0
        self._expected_seq = head.base_seq + 1
        self._prev_hash = head.base_hash
        self._prev_id: int | None = None

    def feed(self, row: Mapping[str, Any]) -> Break | None:
        found = _check(self.head.chain, row, self._expected_seq, self._prev_hash, self._prev_id)
        if found is None:
            self.checked += 1
            self._expected_seq = int(row["chain_seq"]) + 1
            self._prev_hash = str(row["row_hash"])
            self._prev_id = row.get("id")
        return found

    def finish(self) -> Break | None:
        last = self._expected_seq - 1
        if last != self.head.seq or self._prev_hash != self.head.hash:
            return Break(
                self.head.chain,
                self._expected_seq,
                None,
                "truncated" if last < self.head.seq else "changed",
                f"the rows end at chain_seq {last}; the chain's head is chain_seq "
                f"{self.head.seq} with another hash",
            )
        return None


def _check(
    chain: str,
    row: Mapping[str, Any],
    expected_seq: int,
    prev_hash: str,
    prev_id: int | None,
) -> Break | None:
    seq, row_id = int(row["chain_seq"]), row.get("id")
    if seq > expected_seq:
        return Break(chain, expected_seq, row_id, "removed", f"chain_seq {expected_seq} is missing")
    if seq < expected_seq:
        return Break(chain, seq, row_id, "reordered", f"chain_seq {seq} appears twice")
    if row["prev_hash"] != prev_hash:
        return Break(chain, seq, row_id, "reordered", "prev_hash is not the previous row's hash")
    if prev_id is not None and row_id is not None and row_id <= prev_id:
        return Break(chain, seq, row_id, "reordered", "row ids do not follow chain order")
    if row_hash(row) != row["row_hash"]:
        return Break(chain, seq, row_id, "changed", "its content does not match its hash")
    return None
