"""Faithful forwarding on the wire, driven by a raw HTTP client: bytes, headers, status
codes and failures exactly as the clients need them."""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp
import pytest
from multidict import CIMultiDict

from proxy import forward
from sandbox.standin import (
    MODEL,
    JsonReply,
    StreamReply,
    encode_event,
    message_body,
    stream_events,
)
from tests.e2e.conftest import Stack

BODY = (
    b'{ "model" : "'
    + MODEL.encode()
    + b'",\n "max_tokens":64, "messages":[{"role":"user","content":"hi"},'
    b'{"role":"system","content":"env block"}], "context_management":{"edits":[]},'
    b' "output_config":{"effort":"medium"}, "unknown_future_field": [1, 2.50, "\\u00e9"] }'
)
CLAUDE_CODE_BETAS = (
    "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,"
    "per-turn-control-2026-07-01,thinking-token-count-2026-05-13"
)


async def post(
    stack: Stack, path: str, body: bytes = BODY, **headers: str
) -> tuple[int, bytes, CIMultiDict[str]]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            stack.proxy_url + path,
            data=body,
            headers={
                "x-api-key": stack.sandbox_token,
                "content-type": "application/json",
                **headers,
            },
        ) as response,
    ):
        return response.status, await response.read(), CIMultiDict(response.headers)


async def test_claude_code_request_goes_through_byte_for_byte(stack: Stack) -> None:
    status, _, _ = await post(
        stack,
        "/v1/messages?beta=true",
        **{
            "anthropic-beta": CLAUDE_CODE_BETAS,
            "anthropic-version": "2023-06-01",
            "anthropic-dangerous-direct-browser-access": "true",
            "x-app": "cli",
            "user-agent": "claude-cli/2.1.330 (external, sdk-cli)",
            "x-claude-code-session-id": "3f2b8c1e-9a4d-4c7b-8e2f-1a2b3c4d5e6f",
            "x-stainless-retry-count": "0",
            "x-session-tag": "custom",
            "authorization": f"Bearer {stack.sandbox_token}",
            "proxy-authorization": "Basic c2VjcmV0",
            "connection": "keep-alive, x-drop-me",
            "x-drop-me": "hop-by-hop by naming",
            "accept-encoding": "gzip, deflate, br, zstd",
        },
    )
    assert status == 200
    [seen] = stack.fake.requests
    assert seen.path_qs == "/v1/messages?beta=true"
    assert seen.body == BODY
    for name, value in {
        "anthropic-beta": CLAUDE_CODE_BETAS,
        "anthropic-version": "2023-06-01",
        "anthropic-dangerous-direct-browser-access": "true",
        "x-app": "cli",
        "user-agent": "claude-cli/2.1.330 (external, sdk-cli)",
        "x-claude-code-session-id": "3f2b8c1e-9a4d-4c7b-8e2f-1a2b3c4d5e6f",
        "x-session-tag": "custom",
        "x-api-key": stack.api_key,
        "accept-encoding": "identity",
    }.items():
        assert seen.headers.getall(name) == [value], name
    for name in ("authorization", "proxy-authorization", "x-drop-me"):
        assert name not in seen.headers, name


async def test_sse_bytes_reach_the_client_unchanged(stack: Stack) -> None:
    events = stream_events(["a", "b" * 300, "c"])
    stack.fake.enqueue(StreamReply(events=events, split_every=7))
    status, body, headers = await post(
        stack, "/v1/messages", BODY.replace(b'"max_tokens"', b'"stream":true,"max_tokens"')
    )
    assert status == 200
    assert headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert headers["request-id"].startswith("req_")
    assert body == b"".join(encode_event(name, data) for name, data in events)
    [record] = await stack.records()
    assert record["complete"] is True
    assert record["bytes_out"] == len(body)


async def test_upstream_errors_pass_through_with_their_headers_and_no_retry(stack: Stack) -> None:
    error = {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow down"},
        "request_id": "req_x",
    }
    limit_headers = {
        "retry-after": "7",
        "retry-after-ms": "7000",
        "x-should-retry": "true",
        "anthropic-ratelimit-tokens-remaining": "0",
    }
    stack.fake.enqueue(JsonReply(status=429, body=error, headers=limit_headers))
    status, body, headers = await post(stack, "/v1/messages")
    assert status == 429
    assert json.loads(body) == error
    for name, value in limit_headers.items():
        assert headers[name] == value
    assert headers["anthropic-ratelimit-requests-limit"] == "4000"
    assert "x-metrux-proxy-error" not in headers
    assert len(stack.fake.requests) == 1
    [record] = await stack.records()
    assert (record["http_status"], record["error_type"]) == (429, "rate_limit_error")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/complete"),
        ("POST", "/v1/messages/batches"),
        ("GET", "/v1/messages"),
        ("DELETE", "/v1/models/x"),
        ("GET", "/"),
    ],
)
async def test_anything_else_is_an_anthropic_shaped_404(
    stack: Stack, method: str, path: str
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method, stack.proxy_url + path, headers={"x-api-key": stack.sandbox_token}
        ) as response,
    ):
        body = await response.json()
    assert response.status in (404, 405)
    assert body["type"] == "error"
    assert body["error"]["type"] == "not_found_error"
    assert stack.fake.requests == []


@pytest.mark.parametrize(
    "target",
    [
        "/v1/models/..",
        "/v1/models/%2e%2e",
        "/v1/models/%2E%2e",
        "/v1/models/..%2F..%2Fv1%2Fmessages",
        "/v1/models/a%5Cb",
        "/v1/models/claude%2Dsonnet-5-5",
        "/v1/models/a\\b",
        "/v1/./models",
        "/v1//models",
        "http://127.0.0.1/v1/models/..",
        "http://api.anthropic.com/v1/models",
    ],
)
async def test_a_path_that_reads_two_ways_is_refused_and_never_forwarded(
    stack: Stack, target: str
) -> None:
    """Sent raw, as no client library would: the target is refused before any route is
    chosen, so no request with the customer's key leaves for another path."""
    host, port = stack.proxy_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"GET {target} HTTP/1.1\r\nHost: x\r\nx-api-key: {stack.sandbox_token}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
    assert stack.fake.requests == []


async def test_oversized_body_is_413_without_contacting_upstream(stack: Stack) -> None:
    status, body, _ = await post(
        stack, "/v1/messages", b"x" * (stack.settings.proxy_max_body_bytes + 1)
    )
    assert status == 413
    assert json.loads(body)["error"]["type"] == "request_too_large"
    assert stack.fake.requests == []


async def test_upstream_redirect_is_not_followed_nor_relayed(stack: Stack) -> None:
    stack.fake.enqueue(
        JsonReply(status=307, body={}, headers={"Location": stack.fake_url + "/v1/elsewhere"})
    )
    status, body, headers = await post(stack, "/v1/messages")
    assert status == 502
    assert "Location" not in headers
    assert json.loads(body)["error"]["type"] == "api_error"
    assert [r.path_qs for r in stack.fake.requests] == ["/v1/messages"]


async def test_upstream_silence_is_a_504(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forward, "RESPONSE_TIMEOUT_S", 0.3)
    stack.fake.enqueue(JsonReply(delay=5))
    status, body, _ = await post(stack, "/v1/messages")
    assert status == 504
    assert json.loads(body)["error"]["type"] == "api_error"
    [record] = await stack.records()
    assert (record["http_status"], record["error_type"], record["complete"]) == (
        504,
        "upstream_timeout",
        False,
    )


async def test_stream_idle_past_the_timeout_is_cut(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(forward, "STREAM_IDLE_TIMEOUT_S", 0.3)
    stack.fake.enqueue(StreamReply(hang_after=3))
    with pytest.raises(aiohttp.ClientPayloadError):
        await post(
            stack, "/v1/messages", BODY.replace(b'"max_tokens"', b'"stream":true,"max_tokens"')
        )
    [record] = await stack.records()
    assert (record["complete"], record["error_type"]) == (False, "upstream_timeout")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_unreachable_upstream_is_a_502(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    from proxy.transport import Upstream

    calls = stack.proxy_app.calls
    monkeypatch.setattr(calls, "upstream", Upstream(f"http://127.0.0.1:{_closed_port()}"))
    status, body, headers = await post(stack, "/v1/messages")
    assert status == 502
    assert json.loads(body)["error"]["type"] == "api_error"
    assert "x-should-retry" not in headers  # a 5xx may be retried by the SDK
    [record] = await stack.records()
    assert (record["http_status"], record["error_type"]) == (502, "upstream_unavailable")


async def test_client_disconnect_cancels_the_upstream_stream(stack: Stack) -> None:
    stack.fake.enqueue(StreamReply(hang_after=4))
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            stack.proxy_url + "/v1/messages",
            data=BODY.replace(b'"max_tokens"', b'"stream":true,"max_tokens"'),
            headers={"x-api-key": stack.sandbox_token, "content-type": "application/json"},
        )
        assert (await response.content.readuntil(b"\n\n")).startswith(b"event: message_start")
        response.close()  # the candidate's client goes away mid-stream
    await asyncio.wait_for(stack.fake.stream_aborted.wait(), timeout=5)
    [record] = await stack.records()
    assert (record["complete"], record["error_type"]) == (False, "client_aborted")
    assert record["input_tokens"] == 25
    assert stack.proxy.in_flight == 0


async def test_cookies_and_the_organization_id_never_reach_the_sandbox(stack: Stack) -> None:
    stack.fake.enqueue(
        JsonReply(
            headers={
                "set-cookie": "__cf_bm=abc; path=/; HttpOnly",
                "anthropic-organization-id": "org-0000-customer",
            }
        )
    )
    status, _, headers = await post(stack, "/v1/messages")
    assert status == 200
    assert "set-cookie" not in headers
    assert "anthropic-organization-id" not in headers
    # What Claude Code reads passes.
    assert headers["anthropic-ratelimit-requests-remaining"] == "3999"
    assert headers["request-id"].startswith("req_")


async def test_a_reflected_key_is_overwritten_recorded_and_audited(stack: Stack) -> None:
    """An upstream that echoes the key, in a header, a JSON body and a stream sent in 7-byte
    chunks (every echo straddles chunks): the sandbox sees stars, each call is recorded as
    reflecting the key, and the customer's audit log says so."""
    key = stack.api_key
    stack.fake.enqueue(
        JsonReply(
            body=message_body(f"your key is {key}, masked …{key[-16:]}"),
            headers={"x-debug-echo": f"x-api-key={key}"},
        ),
        StreamReply(
            events=stream_events(["key: ", key + " and " + key[-16:]]),
            split_every=7,
        ),
    )
    status, body, headers = await post(stack, "/v1/messages")
    assert status == 200
    assert headers["x-debug-echo"] == "x-api-key=" + "*" * len(key)
    text = json.loads(body)["content"][0]["text"]
    assert text == f"your key is {'*' * len(key)}, masked …{'*' * 16}"
    status, streamed, _ = await post(
        stack, "/v1/messages", BODY.replace(b'"max_tokens"', b'"stream": true, "max_tokens"')
    )
    assert status == 200
    for piece in (key, key[:50], key[50:], key[-16:], key[20:40]):
        assert piece.encode() not in body + streamed + str(headers).encode()
    assert b"*" * 16 in streamed
    await stack.records()  # published, ingested, seen by the key monitor
    async with stack.control.get("/v1/audit?action=key:reflected", headers=stack.tenant.auth) as r:
        events = (await r.json())["events"]
    assert len(events) == 2
    assert {e["target_id"] for e in events} == {stack.key_id}
    assert all(e["session_id"] == stack.session_id for e in events)


AMBIGUOUS = [
    (b'{"model": "claude-sonnet-5-5", "model": "claude-opus-9", "max_tokens": 8, "messages": []}',
     {}, "names the field 'model' twice"),
    (b'{"model": "claude-sonnet-5-5", "max_tokens": 8, "max_tokens": 99999, "messages": []}',
     {}, "names the field 'max_tokens' twice"),
    (b'{"model": "claude-sonnet-5-5", "max_tokens": 100.0, "messages": []}', {}, "max_tokens"),
    (b'{"model": "claude-sonnet-5-5", "max_tokens": "100", "messages": []}', {}, "max_tokens"),
    (b'{"model": "claude-sonnet-5-5", "max_tokens": 0, "messages": []}', {}, "max_tokens"),
    (b'{"model": "claude-sonnet-5-5", "max_tokens": true, "messages": []}', {}, "max_tokens"),
    (b'{"model": "claude-sonnet-5-5", "messages": []}', {}, "max_tokens"),
    (b"\xef\xbb\xbf" + BODY, {}, "must be a JSON object"),
    (BODY, {"content-encoding": "gzip"}, "uncompressed"),
    (BODY, {"content-encoding": "identity, br"}, "uncompressed"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "headers", "says"), AMBIGUOUS)
async def test_a_request_the_proxy_could_read_otherwise_than_anthropic_is_refused(
    stack: Stack, body: bytes, headers: dict[str, str], says: str
) -> None:
    status, answer, _ = await post(stack, "/v1/messages", body, **headers)
    assert status == 400
    error = json.loads(answer)
    assert (error["type"], error["error"]["type"]) == ("error", "invalid_request_error")
    assert says in error["error"]["message"]
    assert stack.fake.requests == []


async def test_count_tokens_needs_no_max_tokens(stack: Stack) -> None:
    body = b'{"model": "claude-sonnet-5-5", "messages": [{"role": "user", "content": "hi"}]}'
    status, _, _ = await post(stack, "/v1/messages/count_tokens", body)
    assert status == 200
