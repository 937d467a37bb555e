"""The sans-io HTTP core as transcripts: bytes in, actions and events out, no sockets."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.http.connection import (
    BodyDone,
    Close,
    Dispatch,
    Send,
    ServerConnection,
)
from proxy.http.messages import CONTINUE, BodyFraming, response_head
from proxy.http.request import END, RequestReader
from proxy.http.response import ResponseCut, ResponseHead, ResponseReader
from proxy.routes import Kind, match, plain_path

BODY = b'{"model":"m","max_tokens":8}'


def post(body: bytes = BODY, *extra: bytes, path: bytes = b"/v1/messages") -> bytes:
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: sandbox\r\nx-api-key: t\r\n"
        + b"".join(extra)
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )  # fmt: skip


def kinds(actions: list[object]) -> list[str]:
    return [type(a).__name__ for a in actions]


def test_a_request_is_dispatched_at_its_head_and_its_body_follows() -> None:
    conn = ServerConnection(max_body=1024)
    data = post()
    head, body = data[: -len(BODY)], data[-len(BODY) :]
    [dispatch] = conn.receive(head)
    assert isinstance(dispatch, Dispatch)
    exchange = dispatch.exchange
    assert exchange.request.method == b"POST"
    assert exchange.request.target == b"/v1/messages"
    assert exchange.request.header(b"x-api-key") == b"t"
    assert not exchange.complete
    assert conn.receive(body[:5]) == []
    assert conn.receive(body[5:]) == [BodyDone(exchange)]
    assert exchange.body() == BODY
    assert conn.answered(exchange) == []  # keep-alive: nothing to do until the next request
    assert conn.idle


@pytest.mark.parametrize("size", [1, 2, 7, 64])
def test_any_split_of_the_bytes_gives_the_same_requests(size: int) -> None:
    data = post() + b"GET /v1/models?limit=2 HTTP/1.1\r\nHost: x\r\n\r\n"
    reader = RequestReader(max_body=1024)
    events = [e for i in range(0, len(data), size) for e in reader.feed(data[i : i + size])]
    heads = [e for e in events if not isinstance(e, bytes) and e is not END]
    assert [(h.method, h.target) for h in heads] == [  # type: ignore[union-attr]
        (b"POST", b"/v1/messages"),
        (b"GET", b"/v1/models?limit=2"),
    ]
    assert b"".join(e for e in events if isinstance(e, bytes)) == BODY
    assert events.count(END) == 2


def test_pipelined_requests_are_dispatched_one_at_a_time_in_order() -> None:
    conn = ServerConnection(max_body=1024)
    actions = conn.receive(post() + post(b"{}") + b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
    [first] = actions
    assert isinstance(first, Dispatch)
    assert first.exchange.complete
    [second] = conn.answered(first.exchange)
    assert isinstance(second, Dispatch)
    assert second.exchange.body() == b"{}"
    [third] = conn.answered(second.exchange)
    assert isinstance(third, Dispatch)
    assert third.exchange.request.method == b"GET"
    assert conn.answered(third.exchange) == []


def test_a_client_waiting_for_100_continue_gets_it_once_when_the_body_is_wanted() -> None:
    conn = ServerConnection(max_body=1024)
    data = post(BODY, b"Expect: 100-continue\r\n")
    [dispatch] = conn.receive(data[: -len(BODY)])
    exchange = dispatch.exchange
    assert exchange.request.expects_continue
    assert conn.want_body(exchange) == [Send(CONTINUE)]
    assert conn.want_body(exchange) == []
    assert conn.receive(data[-len(BODY) :]) == [BodyDone(exchange)]
    assert conn.keep_alive(exchange)


def test_refused_before_the_100_continue_the_connection_closes() -> None:
    conn = ServerConnection(max_body=1024)
    data = post(BODY, b"Expect: 100-continue\r\n")
    [dispatch] = conn.receive(data[: -len(BODY)])
    assert not conn.keep_alive(dispatch.exchange)  # the answer says "connection: close"
    assert conn.answered(dispatch.exchange) == [Close()]
    assert conn.receive(data[-len(BODY) :]) == []


def test_an_early_answer_discards_the_rest_of_the_body_then_serves_the_next() -> None:
    conn = ServerConnection(max_body=1024)
    data = post() + b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
    cut = data.index(BODY) + 3
    [dispatch] = conn.receive(data[:cut])
    assert conn.keep_alive(dispatch.exchange)
    assert conn.answered(dispatch.exchange) == []  # answered (say a 401) before its body
    [following] = conn.receive(data[cut:])
    assert isinstance(following, Dispatch)
    assert following.exchange.request.method == b"GET"
    assert dispatch.exchange.chunks == []  # nothing of the discarded body was kept


SMUGGLING = {
    "content_length_and_chunked": b"Transfer-Encoding: chunked\r\n",
    "two_content_lengths": b"Content-Length: 3\r\n",
    "obs_fold": b"x-note: first\r\n folded\r\n",
    "space_before_colon": b"Content-Length : 5\r\n",
    "nul_in_header": b"x-evil: a\x00b\r\n",
    "bad_expect": b"Expect: something-else\r\n",
}


@pytest.mark.parametrize("case", sorted(SMUGGLING))
def test_ambiguous_framing_is_refused_and_closes(case: str) -> None:
    conn = ServerConnection(max_body=1024)
    actions = conn.receive(post(BODY, SMUGGLING[case]))
    assert kinds(actions) == ["Send", "Close"]
    status = int(actions[0].data.split(b" ", 2)[1])  # type: ignore[attr-defined]
    assert 400 <= status < 500
    assert b'"type": "error"' in actions[0].data  # type: ignore[attr-defined]
    assert b"connection: close" in actions[0].data  # type: ignore[attr-defined]
    assert conn.receive(post()) == []  # nothing after it is read


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        (b"x-big: " + b"a" * 9000 + b"\r\n", b"431"),
        (b"".join(b"x-h%d: v\r\n" % n for n in range(200)), b"431"),
    ],
)
def test_oversized_heads_are_refused(extra: bytes, status: bytes) -> None:
    actions = ServerConnection(max_body=1024).receive(post(BODY, extra))
    assert actions[0].data.startswith(b"HTTP/1.1 " + status)  # type: ignore[attr-defined]


def test_a_head_trickled_past_the_limit_is_refused() -> None:
    conn = ServerConnection(max_body=1024)
    assert conn.receive(b"POST /v1/messages HTTP/1.1\r\nx-slow: ") == []
    actions: list[object] = []
    while not actions:
        actions = conn.receive(b"a" * 4096)
    assert actions[0].data.startswith(b"HTTP/1.1 431")  # type: ignore[attr-defined]


def test_a_declared_length_over_the_limit_is_413_before_any_body() -> None:
    actions = ServerConnection(max_body=10).receive(post(b"x" * 11)[:-11])
    assert actions[0].data.startswith(b"HTTP/1.1 413")  # type: ignore[attr-defined]
    assert b"request_too_large" in actions[0].data  # type: ignore[attr-defined]


def test_a_chunked_body_over_the_limit_is_refused_to_its_handler() -> None:
    conn = ServerConnection(max_body=10)
    head = b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    [dispatch] = conn.receive(head)
    [done] = conn.receive(b"b\r\n" + b"x" * 11 + b"\r\n")
    assert done == BodyDone(dispatch.exchange)
    assert dispatch.exchange.refusal is not None
    assert dispatch.exchange.refusal.status == 413
    assert not conn.keep_alive(dispatch.exchange)


def test_a_malformed_request_behind_one_in_flight_is_refused_in_its_turn() -> None:
    conn = ServerConnection(max_body=1024)
    [dispatch] = conn.receive(post() + b"GARBAGE\r\n\r\n")
    actions = conn.answered(dispatch.exchange)
    assert kinds(actions) == ["Send", "Close"]
    assert actions[0].data.startswith(b"HTTP/1.1 400")  # type: ignore[attr-defined]


def test_an_upgrade_request_is_answered_then_the_connection_closes() -> None:
    conn = ServerConnection(max_body=1024)
    upgrade = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n"
    [dispatch] = conn.receive(upgrade + b"\x00binary")
    assert not conn.keep_alive(dispatch.exchange)
    assert conn.answered(dispatch.exchange) == [Close()]


@pytest.mark.parametrize("target", [b"http://evil.example/v1/messages?beta=true", b"*"])
def test_only_origin_form_targets_are_read(target: bytes) -> None:
    conn = ServerConnection(max_body=1024)
    actions = conn.receive(post(path=target))
    [send] = [a for a in actions if isinstance(a, Send)]
    assert send.data.startswith(b"HTTP/1.1 400 ")
    assert b"send the request target as a path" in send.data


@pytest.mark.parametrize(
    ("method", "path", "endpoint"),
    [
        (b"POST", b"/v1/messages", "/v1/messages"),
        (b"POST", b"/v1/messages/count_tokens", "/v1/messages/count_tokens"),
        (b"GET", b"/v1/models", "/v1/models"),
        (b"GET", b"/v1/models/claude-sonnet-5-5", "/v1/models/{model_id}"),
        (b"GET", b"/v1/models/..", None),
        (b"GET", b"/v1/models/%2e%2E", None),
        (b"GET", b"/v1/models/claude%2Dsonnet", None),  # harmless, but reads two ways
        (b"GET", b"/v1/models/a\\b", None),
        (b"POST", b"/v1//messages", None),
        (b"POST", b"/v1/./messages", None),
        (b"GET", b"/v1/models/caf\xc3\xa9", None),
        (b"GET", b"/v1/models/.", None),
        (b"GET", b"/v1/models/..%2Fadmin", None),
        (b"GET", b"/v1/models/a%5Cb", None),
        (b"GET", b"/v1/models/", None),
        (b"GET", b"/v1/models/a/b", None),
        (b"GET", b"/v1/messages", None),
        (b"POST", b"/v1/messages/batches", None),
        (b"POST", b"/v1/../v1/messages", None),
        (b"DELETE", b"/v1/models/x", None),
    ],
)
def test_only_the_api_surface_is_routed(method: bytes, path: bytes, endpoint: str | None) -> None:
    route = match(method, path)
    assert (route.endpoint if route else None) == endpoint
    if route is not None:
        assert route.kind is Kind.RELAY


def test_response_with_a_length_then_a_chunked_one_on_the_same_connection() -> None:
    reader = ResponseReader()
    events = reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nrequest-id: r\r\n\r\nhi")
    head = events[0]
    assert isinstance(head, ResponseHead)
    assert (head.status, head.reason, head.content_length, head.chunked) == (200, b"OK", 2, False)
    assert head.header(b"request-id") == b"r"
    assert events[1:] == [b"hi", END]
    assert reader.keep_alive
    chunked = ResponseReader()
    events = chunked.feed(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    assert events[0].chunked  # type: ignore[union-attr]
    assert events[1:] == [b"abc", END]


def test_interim_responses_are_skipped() -> None:
    events = ResponseReader().feed(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
    )
    assert [type(e).__name__ for e in events] == ["ResponseHead", "EndOfMessage"]
    assert events[0].status == 201  # type: ignore[union-attr]


def test_a_close_delimited_body_ends_at_eof_and_a_short_one_is_a_cut() -> None:
    reader = ResponseReader()
    reader.feed(b"HTTP/1.1 200 OK\r\n\r\nall of it")
    assert reader.eof() == [END]
    assert not reader.keep_alive
    short = ResponseReader()
    short.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
    with pytest.raises(ResponseCut):
        short.eof()
    with pytest.raises(ResponseCut):
        ResponseReader().eof()  # closed before any head


def test_a_malformed_response_is_a_cut() -> None:
    with pytest.raises(ResponseCut):
        ResponseReader().feed(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")


def test_response_framing_keeps_a_length_and_chunks_the_rest() -> None:
    head = response_head(
        429, b"Too Many", [(b"retry-after", b"7")], content_length=None, keep_alive=False
    )
    assert head == (
        b"HTTP/1.1 429 Too Many\r\nretry-after: 7\r\ntransfer-encoding: chunked\r\n"
        b"connection: close\r\n\r\n"
    )
    chunked = BodyFraming(None)
    assert chunked.chunk(b"event: ping\n\n") == b"d\r\nevent: ping\n\n\r\n"
    assert chunked.end() == b"0\r\n\r\n"
    sized = BodyFraming(5)
    assert (sized.chunk(b"hello"), sized.end()) == (b"hello", b"")


def _normalised(path: bytes) -> bytes:
    """RFC 3986: percent-decode, then remove dot segments (section 5.2.4)."""
    decoded = unquote_to_bytes(path)
    out: list[bytes] = []
    for segment in decoded.split(b"/")[1:]:
        if segment == b"..":
            if out:
                out.pop()
        elif segment != b".":
            out.append(segment)
    trailing = decoded.endswith((b"/.", b"/.."))
    return b"/" + b"/".join(out) + (b"/" if trailing else b"")


_SEGMENTS = st.sampled_from(
    [b"v1", b"models", b"messages", b"count_tokens", b"claude-x", b".", b"..", b"", b"%2e",
     b"%2E%2e", b"%2F", b"..%2F", b"%5C", b"a\\b", b"%00", b"\xff", b"admin"]
)  # fmt: skip


@given(
    st.sampled_from([b"GET", b"POST"]),
    st.lists(_SEGMENTS, min_size=1, max_size=6).map(lambda parts: b"/" + b"/".join(parts)),
)
def test_a_routed_path_reads_one_way(method: bytes, path: bytes) -> None:
    """Whatever the segments, a path the proxy routes is its own normal form: what it
    checked is what Anthropic would read, and what it forwards."""
    route = match(method, path)
    if route is None:
        return
    assert plain_path(path)
    assert _normalised(path) == path
    assert route.endpoint in ("/v1/messages", "/v1/messages/count_tokens", "/v1/models",
                              "/v1/models/{model_id}")  # fmt: skip
