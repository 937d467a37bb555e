"""An untrusted sandbox against its proxy (issue 5, item 6): it cannot change where calls
go, smuggle a second request, or flood the parser, and a session's anthropic-beta
allowlist holds. Raw bytes on a socket, so nothing is normalised by a client library."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from sandbox.standin import MODEL
from tests.e2e.conftest import Stack

BODY = json.dumps(
    {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
).encode()


async def _raw(stack: Stack, data: bytes, responses: int = 1) -> tuple[int, bytes]:
    """Send bytes; read until `responses` responses started (or the peer closed); return
    the first response's status and everything read."""
    host, port = stack.proxy_url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    received = b""
    try:
        writer.write(data)
        await writer.drain()
        while received.count(b"HTTP/1.1 ") < responses or not received.endswith(b"}"):
            chunk = await asyncio.wait_for(reader.read(65536), timeout=10)
            if not chunk:
                break
            received += chunk
    finally:
        writer.close()
    status_line = received.split(b"\r\n", 1)[0]
    return int(status_line.split()[1]), received


def _request(
    stack: Stack,
    *,
    target: str = "/v1/messages",
    extra: bytes = b"",
    body: bytes = BODY,
    host: str = "sandbox",
) -> bytes:
    return (
        f"POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"x-api-key: {stack.sandbox_token}\r\nanthropic-version: 2023-06-01\r\n".encode()
        + extra
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )


SMUGGLING = {
    "content_length_and_chunked": (
        b"Transfer-Encoding: chunked\r\n",  # with the Content-Length _request adds
    ),
    "two_content_lengths": (b"Content-Length: 3\r\n",),
    "obs_fold_continuation": (b"x-note: first\r\n folded-into-previous\r\n",),
    "oversized_header": (b"x-big: " + b"a" * 9000 + b"\r\n",),
    "too_many_headers": (b"".join(b"x-h%d: v\r\n" % n for n in range(200)),),
    "space_before_colon": (b"Content-Length : 5\r\n",),
    "nul_in_header": (b"x-evil: a\x00b\r\n",),
}


def _assert_no_secret(stack: Stack, log_output: io.StringIO, *texts: bytes) -> None:
    for secret in (stack.api_key, stack.api_key[-16:], stack.sandbox_token):
        for text in (*texts, log_output.getvalue().encode()):
            assert secret.encode() not in text


@pytest.mark.parametrize("case", sorted(SMUGGLING))
async def test_malformed_framing_is_refused_and_nothing_reaches_anthropic(
    stack: Stack, log_output: io.StringIO, case: str
) -> None:
    (extra,) = SMUGGLING[case]
    status, received = await _raw(stack, _request(stack, extra=extra))
    assert 400 <= status < 500, case
    assert stack.fake.requests == []
    _assert_no_secret(stack, log_output, received)


async def test_a_pipelined_second_request_is_not_smuggled_past_the_first(stack: Stack) -> None:
    """A chunked body that hides a second request: the parser sees two requests, each
    authenticated on its own; the hidden one has no token and is refused."""
    hidden = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
    data = (
        b"POST /v1/messages/count_tokens HTTP/1.1\r\nHost: sandbox\r\n"
        + f"x-api-key: {stack.sandbox_token}\r\n".encode()
        + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + f"{len(BODY):x}\r\n".encode() + BODY + b"\r\n0\r\n\r\n"
        + hidden
    )  # fmt: skip
    _, received = await _raw(stack, data, responses=2)
    assert received.count(b"HTTP/1.1 ") == 2
    assert b"HTTP/1.1 401" in received
    assert [r.path_qs for r in stack.fake.requests] == ["/v1/messages/count_tokens"]


@pytest.mark.parametrize(
    ("target", "host", "extra"),
    [
        ("/v1/messages", "evil.example", b""),
        ("/v1/messages", "sandbox", b"X-Forwarded-Host: evil.example\r\nForwarded: host=e\r\n"),
        ("/v1/messages", "sandbox", b"X-Forwarded-Proto: http\r\nX-Forwarded-For: 6.6.6.6\r\n"),
    ],
)
async def test_the_sandbox_cannot_redirect_or_relabel_the_upstream_call(
    stack: Stack, log_output: io.StringIO, target: str, host: str, extra: bytes
) -> None:
    status, received = await _raw(stack, _request(stack, target=target, host=host, extra=extra))
    _assert_no_secret(stack, log_output, received)
    assert status == 200
    [seen] = stack.fake.requests
    assert seen.path_qs == "/v1/messages"
    assert seen.headers["Host"] == stack.fake_url.removeprefix("http://")
    for name in ("X-Forwarded-Host", "Forwarded", "X-Forwarded-Proto", "X-Forwarded-For"):
        assert name not in seen.headers
    assert seen.headers["x-api-key"] == stack.api_key


@pytest.mark.parametrize("target", ["/_proxy/debug", "/metrics", "/v1/admin"])
async def test_paths_outside_the_api_are_404_and_never_forwarded(stack: Stack, target: str) -> None:
    status, received = await _raw(stack, _request(stack, target=target))
    assert status == 404
    assert b'"not_found_error"' in received
    assert stack.fake.requests == []


@pytest.mark.parametrize(
    "target",
    [
        "/v1/../admin",
        "/v1/messages/../../etc/passwd",
        "http://evil.example/v1/messages",  # absolute-form: the proxy is no forward proxy
    ],
)
async def test_paths_that_read_two_ways_are_400_and_never_forwarded(
    stack: Stack, log_output: io.StringIO, target: str
) -> None:
    status, received = await _raw(stack, _request(stack, target=target))
    _assert_no_secret(stack, log_output, received)
    assert status == 400
    assert b'"invalid_request_error"' in received
    assert stack.fake.requests == []


async def test_by_default_every_beta_passes(stack: Stack) -> None:
    extra = b"anthropic-beta: prompt-caching-2024-07-31, experimental-x\r\n"
    assert (await _raw(stack, _request(stack, extra=extra)))[0] == 200
    assert stack.fake.requests[0].headers["anthropic-beta"] == (
        "prompt-caching-2024-07-31, experimental-x"
    )


@pytest.mark.parametrize("stack", [{"allowed_betas": ["prompt-caching-2024-07-31"]}], indirect=True)
async def test_a_session_beta_allowlist_drops_everything_else(stack: Stack) -> None:
    mixed = b"anthropic-beta: experimental-x,prompt-caching-2024-07-31\r\n"
    assert (await _raw(stack, _request(stack, extra=mixed)))[0] == 200
    only_other = b"anthropic-beta: experimental-x\r\n"
    assert (await _raw(stack, _request(stack, extra=only_other)))[0] == 200
    first, second = stack.fake.requests
    assert first.headers.getall("anthropic-beta") == ["prompt-caching-2024-07-31"]
    assert "anthropic-beta" not in second.headers
    async with stack.control.get(
        f"/v1/sessions/{stack.session_id}", headers=stack.tenant.auth
    ) as r:
        assert (await r.json())["limits"]["allowed_betas"] == ["prompt-caching-2024-07-31"]


async def test_a_slow_loris_cannot_hold_the_proxy(stack: Stack) -> None:
    """Headers trickled byte by byte: other callers are served meanwhile."""
    host, port = stack.proxy_url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-slow: ")
    await writer.drain()
    status, _ = await _raw(stack, _request(stack))
    assert status == 200
    writer.close()
    del reader


async def test_a_body_too_deep_to_parse_is_refused_for_a_generation_and_relayed_otherwise(
    stack: Stack,
) -> None:
    """A generation the proxy cannot read cannot be held to the budget: a clear 400. A
    count_tokens call spends nothing and is relayed as it is (Anthropic answers it)."""
    deep = b'{"model": "' + MODEL.encode() + b'", "messages": ' + b"[" * 20000 + b"]" * 20000 + b"}"
    status, received = await _raw(stack, _request(stack, body=deep))
    assert status == 400
    assert b"the body must be a JSON object" in received
    assert stack.fake.requests == []
    _, received = await _raw(stack, _request(stack, target="/v1/messages/count_tokens", body=deep))
    assert b"x-metrux-proxy-error" not in received.lower()
    assert len(stack.fake.requests) == 1
    assert stack.fake.requests[0].body == deep


def _with_tools(tools: str, extra: str = "") -> bytes:
    return (
        b'{"model": "' + MODEL.encode() + b'", "max_tokens": 16, "messages": '
        b'[{"role": "user", "content": "hi"}], "tools": ' + tools.encode() + extra.encode() + b"}"
    )


WEB_SEARCH = '[{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}]'
WEB_FETCH = '[{"type": "web_fetch_20250910", "name": "web_fetch"}]'
CLIENT_TOOL = '[{"name": "run", "input_schema": {"type": "object"}}]'
MCP = ', "mcp_servers": [{"type": "url", "url": "https://mcp.example/sse", "name": "x"}]'


@pytest.mark.parametrize("stack", [{"allowed_server_tools": ["web_fetch"]}], indirect=True)
async def test_server_tools_outside_the_session_allowlist_are_refused(stack: Stack) -> None:
    """They run at Anthropic and reach the internet from there, past the sandbox's egress
    rules: a session allows only those named."""
    for body in (_with_tools(WEB_SEARCH), _with_tools(CLIENT_TOOL, MCP)):
        status, received = await _raw(stack, _request(stack, body=body))
        assert status == 403
        assert b"server tool(s) not allowed in this session" in received
    assert stack.fake.requests == []
    for body in (_with_tools(WEB_FETCH), _with_tools(CLIENT_TOOL)):
        assert (await _raw(stack, _request(stack, body=body)))[0] == 200
    assert len(stack.fake.requests) == 2
    async with stack.control.get(
        f"/v1/sessions/{stack.session_id}", headers=stack.tenant.auth
    ) as r:
        assert (await r.json())["limits"]["allowed_server_tools"] == ["web_fetch"]


async def test_by_default_every_server_tool_passes(stack: Stack) -> None:
    for body in (_with_tools(WEB_SEARCH), _with_tools(CLIENT_TOOL, MCP)):
        assert (await _raw(stack, _request(stack, body=body)))[0] == 200
    assert len(stack.fake.requests) == 2
