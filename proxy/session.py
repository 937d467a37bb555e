"""The proxy's view of its one session: what attach granted, the key, limits, and stop."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from typing import Any

import structlog

from core.transcript import ChainHead, next_link
from proxy.keyring import SessionKey
from proxy.limits import BadTokenLockout, SessionBudget, TokenBucket

log = structlog.get_logger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class SessionInfo:
    session_id: str
    tenant_id: str
    key_id: str
    deadline_at: dt.datetime
    token_sha256: str = dataclasses.field(repr=False)
    grader_sha256: str | None = dataclasses.field(repr=False, default=None)
    max_requests: int | None = None
    max_output_tokens: int | None = None
    allowed_models: list[str] | None = None
    allowed_betas: frozenset[str] | None = None  # None: every anthropic-beta passes
    allowed_server_tools: frozenset[str] | None = None  # None: every server-side tool
    chain_head: ChainHead | None = None  # None: the session's first proxy
    epoch: int = 0  # this attach's number: a later attach of the session fences this proxy
    spent_requests: int = 0  # what the session's records already count against its budget
    spent_output_tokens: int = 0

    @classmethod
    def from_grant(cls, grant: dict[str, Any]) -> SessionInfo:
        limits = grant.get("limits") or {}
        head = grant.get("chain_head")
        return cls(
            session_id=grant["session_id"],
            tenant_id=grant["tenant_id"],
            key_id=grant["key_id"],
            deadline_at=dt.datetime.fromisoformat(grant["deadline_at"]),
            epoch=int(grant.get("epoch") or 0),
            spent_requests=int((grant.get("spent") or {}).get("requests") or 0),
            spent_output_tokens=int((grant.get("spent") or {}).get("output_tokens") or 0),
            token_sha256=grant["session_token_sha256"],
            grader_sha256=grant.get("grader_token_sha256"),
            max_requests=limits.get("max_requests"),
            max_output_tokens=limits.get("max_output_tokens"),
            allowed_models=limits.get("allowed_models"),
            allowed_betas=(
                frozenset(limits["allowed_betas"]) if limits.get("allowed_betas") else None
            ),
            allowed_server_tools=(
                None
                if limits.get("allowed_server_tools") is None
                else frozenset(limits["allowed_server_tools"])
            ),
            chain_head=ChainHead(int(head["seq"]), str(head["link"])) if head else None,
        )


class ProxySession:
    """Shared state of the running proxy. `clear` is the one way the key goes away."""

    def __init__(
        self,
        info: SessionInfo,
        key: SessionKey,
        *,
        rate_per_s: float = 10.0,
        burst: int = 100,
    ) -> None:
        self.info = info
        self.key = key
        self.budget = SessionBudget(
            max_requests=info.max_requests,
            max_output_tokens=info.max_output_tokens,
            allowed_models=info.allowed_models,
            spent_requests=info.spent_requests,
            spent_output_tokens=info.spent_output_tokens,
        )
        # The proxy is its session's only server (a new attach fences the previous one),
        # so an in-process bucket is the whole limit.
        self.rate = TokenBucket(rate_per_s, burst)
        self.lockout = BadTokenLockout()
        self.stopped = asyncio.Event()
        self.stop_reason: str | None = None
        self.grader_sha256 = info.grader_sha256  # replaced when a new grader token is issued
        self.candidate_enabled = True
        self.candidate_retired = asyncio.Event()
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.chain = info.chain_head or ChainHead.start(info.session_id)

    def next_link(
        self, request_sha256: str | None, response_sha256: str | None, record_id: str
    ) -> tuple[int, str, str]:
        """A finished call's place in the transcript chain (in finishing order): its
        sequence number, the previous link and its own link."""
        head = self.chain
        link = next_link(head.link, request_sha256, response_sha256, record_id)
        self.chain = ChainHead(head.seq + 1, link)
        return head.seq + 1, head.link, link

    def clear(self, reason: str) -> None:
        """Zero the key and ask the process to exit (once in-flight calls end). Idempotent."""
        if self.stopped.is_set():
            return
        self.key.clear()
        self.stop_reason = reason
        self.stopped.set()
        log.info("session_key_cleared", session_id=self.info.session_id, reason=reason)

    def set_grader(self, grader_sha256: str) -> None:
        self.grader_sha256 = grader_sha256

    def retire_candidate(self) -> None:
        """The candidate submitted: only the grader's token works from now on."""
        if self.candidate_enabled:
            self.candidate_enabled = False
            self.candidate_retired.set()
            log.info("candidate_token_retired", session_id=self.info.session_id)

    def call_started(self) -> None:
        self.in_flight += 1
        self.idle.clear()

    def call_finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle.set()
