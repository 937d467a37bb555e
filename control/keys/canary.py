"""The fingerprint canary: find customer keys in log files without knowing the keys.

The database holds the SHA-256 fingerprint of every stored key (never the key). Each line
of a log file is searched for anything shaped like an Anthropic key, in the forms logs
mangle secrets into (JSON-escaped, percent-encoded); every candidate is hashed and looked
up among the fingerprints of live keys. A match names the key by id and last four
characters, never by value. `metrux control scan-logs FILE…` exits 1 on any match.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from control.audit import store as audit
from control.audit.store import Actor
from control.keys import store
from core.redaction import decode_layers

# Over-matching is harmless (a candidate is only reported when its hash is a live key's).
_CANDIDATE = re.compile(r"sk-ant-[A-Za-z0-9_-]{8,300}")
MAX_LINE_CHARS = 1024 * 1024
MIN_KEY_CHARS = 20


@dataclasses.dataclass(frozen=True, slots=True)
class LiveKey:
    id: str
    tenant_id: str
    last4: str


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    path: str
    line: int
    key: LiveKey


async def live_fingerprints(engine: AsyncEngine, actor: Actor) -> dict[str, LiveKey]:
    """Every live key's fingerprint, all tenants'. The read is audited."""
    async with engine.begin() as conn:
        rows = await store.live_fingerprints(conn)
        await audit.record_operator_read(
            conn, actor, command="scan-logs", target_type="api_key", keys=len(rows)
        )
    return {fingerprint: LiveKey(*rest) for fingerprint, *rest in rows}


def _candidates(line: str) -> set[str]:
    found: set[str] = set()
    line = line[:MAX_LINE_CHARS]
    # The same decoding redaction applies: percent-encoding and backslash escapes.
    for form in {line, decode_layers(line)}:
        for match in _CANDIDATE.finditer(form):
            token = match.group()
            # Characters that follow a key in a log line can be swallowed by the pattern:
            # try every prefix too (cheap: lines with candidates are rare).
            found.update(token[:end] for end in range(MIN_KEY_CHARS, len(token) + 1))
    return found


def scan_lines(
    path: str, lines: Iterable[str], fingerprints: Mapping[str, LiveKey]
) -> Iterator[Finding]:
    for number, line in enumerate(lines, start=1):
        for token in _candidates(line):
            digest = "sha256:" + hashlib.sha256(token.encode()).hexdigest()
            key = fingerprints.get(digest)
            if key is not None:
                yield Finding(path, number, key)


def scan_files(paths: Iterable[Path], fingerprints: Mapping[str, LiveKey]) -> list[Finding]:
    findings: list[Finding] = []
    for path in paths:
        with path.open(encoding="utf-8", errors="surrogateescape") as lines:
            findings.extend(scan_lines(str(path), lines, fingerprints))
    return findings
