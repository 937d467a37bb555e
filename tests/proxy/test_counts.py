"""Folding responses into usage: exact objects kept, counts never folded together."""

from __future__ import annotations

import hashlib
import json
import sys
import traceback

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.meter.counts import StreamFold, fold_json, token_counts
from proxy.meter.digest import (
    DuplicateKey,
    canonical_sha256,
    parse_top_level,
    request_facts,
    server_tools_of,
)
from proxy.meter.sse import SseEvent
from sandbox.standin import USAGE, message_body, stream_events


def fold(events: list[tuple[str, dict]]) -> StreamFold:
    result = StreamFold()
    for name, data in events:
        result.add(SseEvent(name, json.dumps(data)))
    return result


def test_stream_counts_take_input_from_start_and_output_from_the_last_delta() -> None:
    result = fold(stream_events())
    assert result.counts() == {
        "input_tokens": 25,
        "output_tokens": 12,
        "cache_creation_input_tokens": 10,
        "cache_read_input_tokens": 5,
    }
    assert result.usage == {
        "message_start": {**USAGE, "output_tokens": 1},
        "message_delta": {"output_tokens": 12},
    }
    assert (result.message_stopped, result.stop_reason) == (True, "end_turn")


def test_cumulative_fields_in_message_delta_win() -> None:
    assert token_counts(
        {"input_tokens": 5, "output_tokens": 1}, {"input_tokens": 7, "output_tokens": 9}
    ) == {
        "input_tokens": 7,
        "output_tokens": 9,
        "cache_creation_input_tokens": None,
        "cache_read_input_tokens": None,
    }


def test_streamed_and_unstreamed_content_have_the_same_digest() -> None:
    tool = {"id": "toolu_1", "name": "Bash", "input": {"command": "ls", "n": [1, {"x": None}]}}
    streamed = fold(stream_events(["Let", " me", " see."], tool_use=tool))
    whole = fold_json(json.dumps(message_body("Let me see.", tool_use=tool)).encode())
    assert canonical_sha256(streamed.content) == canonical_sha256(whole["content"])


def test_error_event_and_json_error_body() -> None:
    result = fold(
        [("error", {"type": "error", "error": {"type": "overloaded_error", "message": "x"}})]
    )
    assert result.error_type == "overloaded_error"
    assert fold_json(b'{"type":"error","error":{"type":"rate_limit_error","message":"x"}}') == {
        "error_type": "rate_limit_error"
    }


def test_count_tokens_reply_gives_input_tokens() -> None:
    assert fold_json(b'{"input_tokens": 42}')["usage"] == {"input_tokens": 42}


def test_request_facts_hash_system_and_each_message() -> None:
    body = json.dumps(
        {
            "model": "m",
            "max_tokens": 99,
            "stream": True,
            "system": [{"type": "text", "text": "s"}],
            "messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "env"}],
        }
    ).encode()
    facts = request_facts(body)
    assert (facts.model, facts.max_tokens, facts.stream) == ("m", 99, True)
    digests = facts.digests()
    assert digests.request_sha256 == hashlib.sha256(body).hexdigest()
    assert digests.system_sha256 == canonical_sha256([{"type": "text", "text": "s"}])
    assert digests.message_sha256s == (canonical_sha256("a"), canonical_sha256("env"))


def test_request_facts_survive_garbage() -> None:
    facts = request_facts(b"\xff not json")
    assert facts.model is None
    assert facts.digests().request_sha256 == hashlib.sha256(b"\xff not json").hexdigest()


def test_request_facts_whose_content_cannot_be_re_encoded_keep_the_body_digest() -> None:
    # Parsed at the normal limit, hashed later under a lower one: the digests are computed
    # after the request has left, so re-encoding must not fail the call.
    body = b'{"messages": [{"content": ' + b"[" * 300 + b"]" * 300 + b"}]}"
    facts = request_facts(body)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(traceback.extract_stack()) + 100)
    try:
        digests = facts.digests()
    finally:
        sys.setrecursionlimit(limit)
    assert digests.request_sha256 == hashlib.sha256(body).hexdigest()
    assert digests.message_sha256s == ()


def test_stream_events_of_any_json_shape_are_ignored_not_fatal() -> None:
    """Whatever JSON an upstream puts in an event (a type that is a list or a number,
    fields of the wrong kind), the fold skips it and keeps what it had."""
    fold = StreamFold()
    for name, data in stream_events(["ok"]):
        fold.add(SseEvent(name, json.dumps(data)))
    before = fold.counts()
    for odd in (
        {"type": ["message_start"]},
        {"type": 7},
        {"type": None},
        {"type": "message_delta", "delta": "stop", "usage": [1]},
        {"type": "content_block_start", "index": "0", "content_block": []},
        {"type": "content_block_delta", "index": 99, "delta": {"type": "text_delta"}},
        [1, 2],
        "text",
    ):
        fold.add(SseEvent("message_delta", json.dumps(odd)))
    assert fold.counts() == before
    assert fold.message_stopped


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), _JSON), st.sampled_from([None, 0, 2]))
def test_the_top_level_walk_reads_what_json_loads_reads(
    data: dict[str, object], indent: int | None
) -> None:
    text = json.dumps(data, indent=indent)
    assert parse_top_level(text) == json.loads(text)


def test_a_top_level_field_named_twice_is_refused_and_nested_ones_are_not() -> None:
    with pytest.raises(DuplicateKey, match="model"):
        parse_top_level('{"model": "a", "max_tokens": 1, "model": "b"}')
    assert parse_top_level('{"m": [{"a": 1, "a": 2}]}') == {"m": [{"a": 2}]}
    for bad in ('{"a": 1,}', '{"a" 1}', '{"a": 1} x', "{a: 1}"):
        with pytest.raises(ValueError):  # noqa: PT011 - json's own errors are ValueErrors
            parse_top_level(bad)


@pytest.mark.parametrize(
    ("body", "tools"),
    [
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, {"web_search"}),
        ({"tools": [{"type": "web_fetch_20250910", "name": "web_fetch"}]}, {"web_fetch"}),
        ({"tools": [{"type": "code_execution_20250825", "name": "x"}]}, {"code_execution"}),
        ({"tools": [{"type": "mcp_toolset", "mcp_server_name": "x"}]}, {"mcp"}),
        ({"mcp_servers": [{"type": "url", "url": "https://x", "name": "x"}]}, {"mcp"}),
        ({"tools": [{"name": "bash", "input_schema": {}}, {"type": "bash_20250124"}]}, set()),
        ({"tools": "not a list", "mcp_servers": []}, set()),
    ],
)
def test_the_server_side_tools_a_request_asks_for(body: dict[str, object], tools: set[str]) -> None:
    assert server_tools_of(body) == tools
