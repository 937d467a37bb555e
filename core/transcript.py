"""The transcript digest chain: one link per upstream call of a session.

    link_0 = SHA-256("metrux-transcript-v1:" ‖ session id)
    link_n = SHA-256(link_{n-1} ‖ request_sha256 ‖ response_sha256 ‖ record id)

Digests enter as their 32 raw bytes, the record id as ASCII. `request_sha256` is the
SHA-256 of the exact request body the sandbox sent; `response_sha256` of the exact response
bytes relayed back (the whole SSE byte stream for a stream; empty when no response came).
The proxy extends the chain as calls finish, the control plane stores each link with its
usage record and seals the last one at grading completion, and a customer holding the
bodies can recompute every link (`metrux verify-transcript`). No plaintext is kept.
"""

from __future__ import annotations

import dataclasses
import hashlib

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def genesis(session_id: str) -> str:
    return hashlib.sha256(b"metrux-transcript-v1:" + session_id.encode()).hexdigest()


def next_link(
    previous: str, request_sha256: str | None, response_sha256: str | None, record_id: str
) -> str:
    data = (
        bytes.fromhex(previous)
        + bytes.fromhex(request_sha256 or EMPTY_SHA256)
        + bytes.fromhex(response_sha256 or EMPTY_SHA256)
        + record_id.encode("ascii")
    )
    return hashlib.sha256(data).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class ChainHead:
    """Where a session's chain stands: the number of links so far and the last one."""

    seq: int
    link: str

    @classmethod
    def start(cls, session_id: str) -> ChainHead:
        return cls(0, genesis(session_id))
