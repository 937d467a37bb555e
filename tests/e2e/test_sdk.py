"""The official anthropic SDK through the proxy: every call reaches the client unchanged,
the upstream sees the real key and never the session token, and each call leaves one
usage record with the right counts and digests."""

from __future__ import annotations

import base64
import hashlib
import json

import anthropic
import pytest

from proxy.meter.digest import canonical_sha256
from sandbox.standin import MODEL, USAGE, JsonReply, StreamReply, message_body, stream_events
from tests.e2e.conftest import Stack

PROMPT = [{"role": "user", "content": "Write a haiku about proxies."}]


def assert_upstream_saw_only_the_real_key(stack: Stack) -> None:
    assert stack.fake.requests, "the upstream saw no request"
    for seen in stack.fake.requests:
        assert seen.headers.getall("x-api-key") == [stack.api_key]
        assert "authorization" not in seen.headers
        assert stack.sandbox_token not in json.dumps(list(seen.headers.items()))
        assert stack.sandbox_token.encode() not in seen.body


async def test_messages_create(stack: Stack) -> None:
    message = await stack.sdk().messages.create(model=MODEL, max_tokens=64, messages=PROMPT)
    assert message.content[0].text == "Hello from the fake."
    assert message.usage.cache_creation.ephemeral_1h_input_tokens == 3
    assert message._request_id
    assert message._request_id.startswith("req_")
    assert_upstream_saw_only_the_real_key(stack)
    [upstream] = stack.fake.requests
    assert (upstream.method, upstream.path_qs) == ("POST", "/v1/messages")
    assert upstream.headers["accept-encoding"] == "identity"
    [sent] = stack.sent
    assert upstream.body == sent.content  # byte for byte
    for name in (
        "anthropic-version",
        "user-agent",
        "x-stainless-lang",
        "x-stainless-retry-count",
        "content-type",
    ):
        assert upstream.headers[name] == sent.headers[name], name
    [record] = await stack.records()
    assert record["endpoint"] == "/v1/messages"
    assert (record["stream"], record["complete"], record["http_status"]) == (False, True, 200)
    assert record["model_requested"] == record["model_served"] == MODEL
    assert record["usage"] == USAGE
    assert (
        record["input_tokens"],
        record["output_tokens"],
        record["cache_creation_input_tokens"],
        record["cache_read_input_tokens"],
    ) == (25, 12, 10, 5)
    assert record["request_sha256"] == hashlib.sha256(upstream.body).hexdigest()
    assert record["message_sha256s"] == [canonical_sha256(PROMPT[0]["content"])]
    assert record["response_content_sha256"] == canonical_sha256(
        [{"type": "text", "text": "Hello from the fake."}]
    )
    assert record["upstream_request_id"] == message._request_id
    assert record["stop_reason"] == "end_turn"
    assert record["ttfb_ms"] > 0
    assert record["latency_ms"] >= record["ttfb_ms"]


async def test_messages_stream_helper(stack: Stack) -> None:
    async with stack.sdk().messages.stream(
        model=MODEL, max_tokens=64, messages=PROMPT, system="Be brief."
    ) as s:
        text = "".join([t async for t in s.text_stream])
        final = await s.get_final_message()
    assert text == "Hello from the fake."
    assert final.usage.output_tokens == 12
    assert_upstream_saw_only_the_real_key(stack)
    [record] = await stack.records()
    assert (record["stream"], record["complete"], record["stop_reason"]) == (True, True, "end_turn")
    assert record["usage"]["message_start"]["cache_creation"] == USAGE["cache_creation"]
    assert record["usage"]["message_delta"] == {"output_tokens": 12}
    # input and cache from message_start, output from the last message_delta; nothing folded
    assert (record["input_tokens"], record["output_tokens"]) == (25, 12)
    assert (record["cache_creation_input_tokens"], record["cache_read_input_tokens"]) == (10, 5)
    assert record["system_sha256"] == canonical_sha256("Be brief.")
    # the streamed reply's content digest equals that of the same reply unstreamed
    assert record["response_content_sha256"] == canonical_sha256(
        [{"type": "text", "text": "Hello from the fake."}]
    )
    assert record["response_sha256"] is not None
    assert record["bytes_out"] > 0


async def test_create_stream_true_delivers_every_event_in_order(stack: Stack) -> None:
    events = await stack.sdk().messages.create(
        model=MODEL, max_tokens=64, messages=PROMPT, stream=True
    )
    received = [event.type async for event in events]
    # The SDK yields every event but the ping keep-alives (the raw bytes are compared in
    # test_forwarding.py).
    assert received == [name for name, _ in stream_events() if name != "ping"]
    [record] = await stack.records()
    assert record["complete"] is True


async def test_count_tokens_is_forwarded(stack: Stack) -> None:
    result = await stack.sdk().messages.count_tokens(model=MODEL, messages=PROMPT)
    [upstream] = stack.fake.requests
    assert upstream.path_qs == "/v1/messages/count_tokens"
    assert result.input_tokens == len(upstream.body) // 4
    [record] = await stack.records()
    assert (record["endpoint"], record["input_tokens"], record["output_tokens"]) == (
        "/v1/messages/count_tokens",
        result.input_tokens,
        None,
    )


async def test_models_list_and_retrieve(stack: Stack) -> None:
    client = stack.sdk()
    ids = [model.id async for model in client.models.list(limit=5)]
    retrieved = await client.models.retrieve("claude-haiku-4-5")
    assert ids == [MODEL, "claude-haiku-4-5"]
    assert retrieved.id == "claude-haiku-4-5"
    assert [r.path_qs for r in stack.fake.requests] == [
        "/v1/models?limit=5",
        "/v1/models/claude-haiku-4-5",
    ]
    assert_upstream_saw_only_the_real_key(stack)
    assert [r["endpoint"] for r in await stack.records()] == ["/v1/models", "/v1/models/{model_id}"]


async def test_beta_headers_pass_verbatim(stack: Stack) -> None:
    betas = ["interleaved-thinking-2025-05-14", "context-management-2025-06-27"]
    await stack.sdk().beta.messages.create(model=MODEL, max_tokens=64, messages=PROMPT, betas=betas)
    [upstream] = stack.fake.requests
    assert upstream.headers["anthropic-beta"] == ",".join(betas)


async def test_tool_use_round_trip(stack: Stack) -> None:
    tool_use = {
        "id": "toolu_01",
        "name": "Bash",
        "input": {"command": "ls -la", "description": "list"},
    }
    stack.fake.enqueue(JsonReply(body=message_body("Let me look.", tool_use=tool_use)))
    tools = [
        {
            "name": "Bash",
            "description": "run",
            "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}},
        }
    ]
    client = stack.sdk()
    first = await client.messages.create(model=MODEL, max_tokens=64, messages=PROMPT, tools=tools)
    assert first.stop_reason == "tool_use"
    follow_up = [
        *PROMPT,
        {
            "role": "assistant",
            "content": [block.model_dump(exclude_none=True) for block in first.content],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01",
                    "content": "tool-ok",
                    "is_error": False,
                }
            ],
        },
    ]
    second = await client.messages.create(
        model=MODEL, max_tokens=64, messages=follow_up, tools=tools
    )
    assert second.content[0].text == "Hello from the fake."
    assert stack.fake.requests[1].json()["messages"][2]["content"][0]["tool_use_id"] == "toolu_01"
    first_record, second_record = await stack.records()
    assert first_record["stop_reason"] == "tool_use"
    assert len(second_record["message_sha256s"]) == 3
    assert second_record["message_sha256s"][0] == first_record["message_sha256s"][0]


async def test_streamed_tool_use_is_reassembled_for_the_digest(stack: Stack) -> None:
    tool_use = {"id": "toolu_02", "name": "Read", "input": {"path": "/tmp/x", "lines": [1, 2]}}
    stack.fake.enqueue(StreamReply(events=stream_events(["Reading."], tool_use=tool_use)))
    async with stack.sdk().messages.stream(model=MODEL, max_tokens=64, messages=PROMPT) as s:
        final = await s.get_final_message()
    assert final.content[1].input == tool_use["input"]
    [record] = await stack.records()
    assert record["response_content_sha256"] == canonical_sha256(
        [{"type": "text", "text": "Reading."}, {"type": "tool_use", **tool_use}]
    )


async def test_image_block_goes_through_unchanged(stack: Stack) -> None:
    png = base64.b64encode(bytes(range(256)) * 64).decode()
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
        {"type": "text", "text": "What is this?"},
    ]
    await stack.sdk().messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": content}]
    )
    [upstream] = stack.fake.requests
    assert upstream.json()["messages"][0]["content"] == content
    [record] = await stack.records()
    assert record["message_sha256s"] == [canonical_sha256(content)]
    assert record["bytes_in"] == len(upstream.body)


async def test_sdk_retries_on_529_each_leave_a_record(stack: Stack) -> None:
    overloaded = JsonReply(
        status=529,
        body={"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        headers={"retry-after-ms": "5"},
    )
    stack.fake.enqueue(overloaded, overloaded)
    message = await stack.sdk(max_retries=2).messages.create(
        model=MODEL, max_tokens=64, messages=PROMPT
    )
    assert message.content[0].text == "Hello from the fake."
    assert [r.headers["x-stainless-retry-count"] for r in stack.fake.requests] == ["0", "1", "2"]
    records = await stack.records()
    assert [(r["http_status"], r["error_type"], r["complete"]) for r in records] == [
        (529, "overloaded_error", True),
        (529, "overloaded_error", True),
        (200, None, True),
    ]
    assert [r["output_tokens"] for r in records] == [None, None, 12]


async def read_stream(stack: Stack) -> str:
    text = ""
    async with stack.sdk().messages.stream(model=MODEL, max_tokens=64, messages=PROMPT) as s:
        async for piece in s.text_stream:
            text += piece
    return text


async def test_upstream_cut_mid_stream_fails_the_client_and_marks_the_record(stack: Stack) -> None:
    stack.fake.enqueue(StreamReply(cut_after=5))
    # The SDK sees a broken transfer (httpx's RemoteProtocolError), never a clean end.
    with pytest.raises(Exception, match=r"incomplete|peer closed|Server disconnected"):
        await read_stream(stack)
    [record] = await stack.records()
    assert (record["complete"], record["error_type"]) == (False, "upstream_cut")
    assert record["input_tokens"] == 25  # what message_start had said
    assert record["output_tokens"] == 1
    assert len(stack.fake.requests) == 1  # the proxy did not retry


async def test_error_event_after_200_reaches_the_client(stack: Stack) -> None:
    events = [
        *stream_events()[:4],
        (
            "error",
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        ),
    ]
    stack.fake.enqueue(StreamReply(events=events))
    with pytest.raises(anthropic.APIStatusError) as caught:
        await read_stream(stack)
    assert "overloaded_error" in str(caught.value.body)
    [record] = await stack.records()
    assert (record["http_status"], record["complete"], record["error_type"]) == (
        200,
        False,
        "overloaded_error",
    )


@pytest.mark.parametrize(
    "credentials",
    [
        {"api_key": "mxs_" + "x" * 43},
        {"api_key": "sk-ant-api03-guess"},
        {"api_key": None, "auth_token": None},
    ],
    ids=["wrong_session_token", "other_key", "missing"],
)
async def test_bad_or_missing_token_gets_401_that_says_do_not_retry(
    stack: Stack, credentials: dict
) -> None:
    client = stack.sdk(max_retries=2, **credentials)
    with pytest.raises((anthropic.AuthenticationError, TypeError)) as caught:
        await client.messages.create(model=MODEL, max_tokens=64, messages=PROMPT)
    if isinstance(caught.value, anthropic.AuthenticationError):
        assert caught.value.response.headers["x-should-retry"] == "false"
        assert caught.value.body["error"]["type"] == "authentication_error"
        assert "guess" not in json.dumps(caught.value.body)
    assert stack.fake.requests == []


async def test_call_after_clear_is_403_and_the_key_buffer_is_zeroed(stack: Stack) -> None:
    client = stack.sdk()
    await client.messages.create(model=MODEL, max_tokens=64, messages=PROMPT)
    stack.proxy.clear("test")
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        await client.messages.create(model=MODEL, max_tokens=64, messages=PROMPT)
    assert caught.value.body["error"]["type"] == "permission_error"
    assert stack.proxy.key.buffer_is_zeroed()
    assert len(stack.fake.requests) == 1
