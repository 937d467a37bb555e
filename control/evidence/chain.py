"""Checking a transcript digest chain: the stored one, and a customer's transcript against it.

Pure functions over plain data; the HTTP view and `metrux verify-transcript` share them.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any

from core.transcript import EMPTY_SHA256, genesis, next_link


@dataclasses.dataclass(frozen=True, slots=True)
class ChainCheck:
    calls: int
    final_link: str
    intact: bool
    problems: list[str]


def check_chain(session_id: str, entries: Sequence[dict[str, Any]]) -> ChainCheck:
    """Walk the stored links in order: each must follow from its predecessor."""
    problems: list[str] = []
    previous, expected_seq = genesis(session_id), 1
    for entry in entries:
        seq = int(entry["seq"])
        if seq != expected_seq:
            problems.append(f"calls {expected_seq} to {seq - 1} are missing (never recorded)")
        if entry["prev"] != previous:
            problems.append(f"call {seq}: does not continue from the previous link")
        recomputed = next_link(
            entry["prev"], entry["request_sha256"], entry["response_sha256"], entry["record_id"]
        )
        if recomputed != entry["link"]:
            problems.append(f"call {seq}: its link does not verify")
        previous, expected_seq = entry["link"], seq + 1
    return ChainCheck(len(entries), previous, not problems, problems)


@dataclasses.dataclass(frozen=True, slots=True)
class CallVerdict:
    seq: int
    request_matches: bool
    response_matches: bool

    @property
    def matches(self) -> bool:
        return self.request_matches and self.response_matches


@dataclasses.dataclass(frozen=True, slots=True)
class TranscriptCheck:
    verdicts: list[CallVerdict]
    missing: int  # chain calls the transcript does not have
    extra: int  # transcript calls the chain does not have
    chain: ChainCheck
    sealed_link_matches: bool | None  # None: the session was not sealed

    @property
    def first_mismatch(self) -> int | None:
        return next((v.seq for v in self.verdicts if not v.matches), None)

    @property
    def ok(self) -> bool:
        return (
            self.first_mismatch is None
            and not self.missing
            and not self.extra
            and self.chain.intact
            and self.sealed_link_matches is not False
        )


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest() if data else EMPTY_SHA256


def verify_transcript(
    digest: dict[str, Any], calls: Sequence[tuple[bytes, bytes]]
) -> TranscriptCheck:
    """Compare a transcript (request and response bytes per call, in order) with the
    session's published chain, call by call, then the chain itself and its seal."""
    entries = digest["entries"]
    verdicts = [
        CallVerdict(
            seq=int(entry["seq"]),
            request_matches=_sha(request) == (entry["request_sha256"] or EMPTY_SHA256),
            response_matches=_sha(response) == (entry["response_sha256"] or EMPTY_SHA256),
        )
        for entry, (request, response) in zip(entries, calls, strict=False)
    ]
    chain = check_chain(digest["session_id"], entries)
    return TranscriptCheck(
        verdicts=verdicts,
        missing=max(0, len(entries) - len(calls)),
        extra=max(0, len(calls) - len(entries)),
        chain=chain,
        sealed_link_matches=seal_matches(digest["session_id"], entries, digest.get("seal")),
    )


def seal_matches(
    session_id: str, entries: Sequence[dict[str, Any]], seal: dict[str, Any] | None
) -> bool | None:
    """Whether the sealed link is the chain's link at the sealed call count (calls
    recorded after the seal do not change what it sealed); None if there is no seal."""
    if seal is None:
        return None
    calls = int(seal["calls"])
    if calls == 0:
        return seal["final_link"] == genesis(session_id)
    at = next((e for e in entries if int(e["seq"]) == calls), None)
    return at is not None and at["link"] == seal["final_link"]
