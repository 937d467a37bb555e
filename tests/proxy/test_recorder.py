"""The meter as a transcript: the hooks forward.py calls, in order, and the one record
they make. Any chunking of the same reply gives the same record."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from core.usage import UsageRecord
from proxy.meter.digest import canonical_sha256, request_facts
from proxy.meter.recorder import CallRecorder
from sandbox.standin import USAGE, encode_event, message_body, stream_events

REQUEST = json.dumps(
    {
        "model": "claude-sonnet-5-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}],
    }
).encode()
REPLY = json.dumps(message_body("Hello.")).encode()
STREAM = b"".join(encode_event(name, data) for name, data in stream_events(["Hel", "lo."]))


class Observed:
    """What the recorder handed on: published records and chain calls."""

    def __init__(self) -> None:
        self.published: list[UsageRecord] = []
        self.chained: list[tuple[str | None, str | None, str]] = []

    def chain(self, request: str | None, response: str | None, record_id: str) -> Any:
        self.chained.append((request, response, record_id))
        return len(self.chained), "prev", "link"

    def recorder(self, body: bytes = REQUEST) -> CallRecorder:
        return CallRecorder(
            session_id="s1",
            tenant_id="t1",
            actor="candidate",
            method="POST",
            endpoint="/v1/messages",
            facts=request_facts(body),
            bytes_in=len(body),
            publish=self.published.append,
            reserved_output_tokens=64,
            chain=self.chain,
        )


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 7, 100, len(REPLY)])
def test_a_reply_in_any_chunking_gives_one_complete_record(size: int) -> None:
    seen = Observed()
    recorder = seen.recorder()
    recorder.on_request_sent()
    recorder.on_response_start(200, "req_1", event_stream=False)
    for chunk in pieces(REPLY, size):
        recorder.on_chunk(chunk)
    record = recorder.on_end()

    assert seen.published == [record]
    assert (record.http_status, record.complete, record.error_type) == (200, True, None)
    assert (record.upstream_request_id, record.stream) == ("req_1", False)
    assert (record.input_tokens, record.output_tokens) == (
        USAGE["input_tokens"],
        USAGE["output_tokens"],
    )
    assert record.usage == USAGE
    assert record.response_sha256 == hashlib.sha256(REPLY).hexdigest()
    assert record.request_sha256 == hashlib.sha256(REQUEST).hexdigest()
    assert record.message_sha256s == [canonical_sha256("hi")]
    assert (record.bytes_in, record.bytes_out) == (len(REQUEST), len(REPLY))
    assert seen.chained == [(record.request_sha256, record.response_sha256, record.record_id)]
    assert (record.chain_seq, record.chain_prev, record.chain_link) == (1, "prev", "link")


@pytest.mark.parametrize("size", [1, 13, len(STREAM)])
def test_a_stream_in_any_chunking_folds_to_the_same_counts(size: int) -> None:
    seen = Observed()
    recorder = seen.recorder()
    recorder.on_response_start(200, "req_2", event_stream=True)
    for chunk in pieces(STREAM, size):
        recorder.on_chunk(chunk)
    record = recorder.on_end()

    assert (record.stream, record.complete, record.stop_reason) == (True, True, "end_turn")
    assert record.output_tokens == USAGE["output_tokens"]
    assert record.ttfb_ms is not None
    assert record.response_sha256 == hashlib.sha256(STREAM).hexdigest()


def test_a_stream_cut_before_its_end_is_an_incomplete_record() -> None:
    seen = Observed()
    recorder = seen.recorder()
    recorder.on_response_start(200, None, event_stream=True)
    recorder.on_chunk(STREAM[: len(STREAM) // 2])
    record = recorder.on_end()
    assert (record.complete, record.error_type) == (False, "upstream_cut")


def test_an_upstream_that_never_answered_records_the_status_the_client_got() -> None:
    seen = Observed()
    record = seen.recorder().on_end(error_type="upstream_unavailable", status=502)
    assert (record.http_status, record.complete, record.error_type) == (
        502,
        False,
        "upstream_unavailable",
    )
    assert (record.response_sha256, record.bytes_out) == (None, 0)
    assert seen.chained == [(record.request_sha256, None, record.record_id)]


def test_the_end_is_recorded_once_whoever_calls_it_again() -> None:
    seen = Observed()
    recorder = seen.recorder()
    recorder.on_response_start(200, None, event_stream=False)
    recorder.on_chunk(REPLY)
    first = recorder.on_end()
    again = recorder.on_end(error_type="client_aborted", status=499)
    assert again is first
    assert seen.published == [first]
