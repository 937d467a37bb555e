"""The meter: observes one upstream call and turns it into a UsageRecord.

`forward.py` calls the hooks (response start, each chunk once the client has it, end);
this module never touches the network. Everything here is
bounded work per chunk (hash update, incremental SSE parse), so metering never holds a
chunk back from the client.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import time
from collections.abc import Callable

from core.usage import UsageRecord
from proxy.meter.counts import StreamFold, fold_json, token_counts
from proxy.meter.digest import RequestFacts, canonical_sha256
from proxy.meter.sse import SseParser

# A non-streamed body larger than this is hashed but not parsed for counts.
MAX_PARSED_BODY = 16 * 1024 * 1024

# (request digest, response digest, record id) -> (chain seq, previous link, link)
Chain = Callable[[str | None, str | None, str], tuple[int, str, str]]


class CallRecorder:
    __slots__ = (
        "_actor",
        "_body",
        "_body_size",
        "_chain",
        "_endpoint",
        "_facts",
        "_fold",
        "_method",
        "_parser",
        "_publish",
        "_reflected",
        "_request_id",
        "_reserved",
        "_response_sha",
        "_session_id",
        "_started_at",
        "_status",
        "_t0",
        "_tenant_id",
        "_ttfb",
        "bytes_in",
        "bytes_out",
        "record",
    )

    def __init__(
        self,
        *,
        session_id: str,
        tenant_id: str,
        actor: str,
        method: str,
        endpoint: str,
        facts: RequestFacts,
        bytes_in: int,
        publish: Callable[[UsageRecord], None],
        reserved_output_tokens: int | None = None,
        chain: Chain | None = None,
    ) -> None:
        self._t0 = time.perf_counter()
        self._started_at = dt.datetime.now(dt.UTC)
        self._session_id = session_id
        self._tenant_id = tenant_id
        self._actor = actor
        self._method = method
        self._endpoint = endpoint
        self._facts = facts
        self._publish = publish
        self._chain = chain
        self._reserved = reserved_output_tokens
        self._status: int | None = None
        self._request_id: str | None = None
        self._ttfb: float | None = None
        self._response_sha = hashlib.sha256()
        self._parser: SseParser | None = None
        self._fold: StreamFold | None = None
        self._body: list[bytes] = []
        self._body_size = 0
        self.bytes_in = bytes_in
        self.bytes_out = 0
        self.record: UsageRecord | None = None
        self._reflected = False

    def on_request_sent(self) -> None:
        """The request is on its way: hash it now, while Anthropic works on it."""
        self._facts.digests()

    def on_response_start(self, status: int, request_id: str | None, *, event_stream: bool) -> None:
        self._status = status
        self._request_id = request_id
        if event_stream:
            self._parser = SseParser()
            self._fold = StreamFold()

    def on_key_reflected(self) -> None:
        """The upstream sent the key back; it was overwritten before the client saw it."""
        self._reflected = True

    def on_chunk(self, chunk: bytes) -> None:
        if self._ttfb is None:
            self._ttfb = (time.perf_counter() - self._t0) * 1000
        self.bytes_out += len(chunk)
        self._response_sha.update(chunk)
        if self._parser is not None and self._fold is not None:
            for event in self._parser.feed(chunk):
                self._fold.add(event)
        elif self._body_size + len(chunk) <= MAX_PARSED_BODY:
            self._body.append(chunk)
            self._body_size += len(chunk)

    def on_end(self, *, error_type: str | None = None, status: int | None = None) -> UsageRecord:
        """Finish the record and publish it. `error_type` names a failure the proxy saw
        (client_aborted, upstream_cut, upstream_timeout, …); `status` is the status the
        client got when the upstream never answered."""
        if self.record is not None:
            return self.record
        http_status = self._status if self._status is not None else status
        fields: dict[str, object] = {}
        if self._fold is not None:
            fold = self._fold
            counts = fold.counts()
            complete = fold.message_stopped and error_type is None and fold.error_type is None
            fields = {
                "model_served": fold.model,
                "stop_reason": fold.stop_reason,
                "usage": fold.usage,
                "response_content_sha256": canonical_sha256(fold.content) if fold.content else None,
                "error_type": error_type
                or fold.error_type
                or (None if complete else "upstream_cut"),
            }
        else:
            folded = fold_json(b"".join(self._body)) if self._status is not None else {}
            counts = token_counts(folded.get("usage"))
            complete = error_type is None and self._status is not None
            content = folded.get("content")
            fields = {
                "model_served": folded.get("model"),
                "stop_reason": folded.get("stop_reason"),
                "usage": folded.get("usage"),
                "response_content_sha256": canonical_sha256(content) if content else None,
                "error_type": error_type or folded.get("error_type"),
            }
        record_id = os.urandom(16).hex()
        response_sha256 = self._response_sha.hexdigest() if self._status is not None else None
        digests = self._facts.digests()
        chain_seq = chain_prev = chain_link = None
        if self._chain is not None:
            chain_seq, chain_prev, chain_link = self._chain(
                digests.request_sha256, response_sha256, record_id
            )
        self.record = UsageRecord(
            record_id=record_id,
            session_id=self._session_id,
            tenant_id=self._tenant_id,
            actor=self._actor,
            method=self._method,
            endpoint=self._endpoint,
            started_at=self._started_at.isoformat(),
            stream=self._fold is not None,
            http_status=http_status,
            complete=complete,
            model_requested=self._facts.model,
            upstream_request_id=self._request_id,
            ttfb_ms=round(self._ttfb, 3) if self._ttfb is not None else None,
            latency_ms=round((time.perf_counter() - self._t0) * 1000, 3),
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            reserved_output_tokens=self._reserved,
            key_reflected=self._reflected,
            request_sha256=digests.request_sha256,
            system_sha256=digests.system_sha256,
            message_sha256s=list(digests.message_sha256s),
            response_sha256=response_sha256,
            chain_seq=chain_seq,
            chain_prev=chain_prev,
            chain_link=chain_link,
            **counts,  # type: ignore[arg-type]
            **fields,  # type: ignore[arg-type]
        )
        self._publish(self.record)
        return self.record
