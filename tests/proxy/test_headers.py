"""Header rewriting: credentials replaced, hop-by-hop dropped, everything else kept."""

from __future__ import annotations

from core.tokens import TokenKind, hash_token, new_token
from proxy.auth import identify, presented_tokens
from proxy.headers import downstream_headers, request_head, with_secret
from tests.factories import FakeSecret as Key


def test_the_secret_goes_into_a_buffer_made_at_its_final_size() -> None:
    out = with_secret(b"x-api-key: ", Key(b"sk-secret"), b"\r\n")
    assert out == b"x-api-key: sk-secret\r\n"
    assert isinstance(out, bytearray)


def test_upstream_head_replaces_credentials_and_keeps_end_to_end_headers() -> None:
    client = [
        (b"Host", b"127.0.0.1:9"),
        (b"x-api-key", b"mxs_session"),
        (b"Authorization", b"Bearer mxs_session"),
        (b"Proxy-Authorization", b"Basic x"),
        (b"Connection", b"keep-alive, X-Hop"),
        (b"X-Hop", b"1"),
        (b"TE", b"trailers"),
        (b"Content-Length", b"10"),
        (b"Accept-Encoding", b"gzip, br"),
        (b"Expect", b"100-continue"),
        (b"X-Forwarded-For", b"6.6.6.6"),
        (b"anthropic-beta", b"a,b"),
        (b"anthropic-beta", b"c"),
        (b"X-Stainless-Retry-Count", b"0"),
        (b"x-app", b"cli"),
    ]

    head = request_head(
        b"POST", b"/v1/messages?beta=true", b"api.anthropic.com", client, 10, Key(b"sk-real")
    )
    assert isinstance(head, bytearray)  # the caller can zero it
    assert head == (
        b"POST /v1/messages?beta=true HTTP/1.1\r\n"
        b"host: api.anthropic.com\r\n"
        b"anthropic-beta: a,b\r\n"
        b"anthropic-beta: c\r\n"
        b"X-Stainless-Retry-Count: 0\r\n"
        b"x-app: cli\r\n"
        b"content-length: 10\r\n"
        b"accept-encoding: identity\r\n"
        b"x-api-key: sk-real\r\n\r\n"
    )


def test_a_beta_allowlist_keeps_only_listed_values() -> None:
    client = [(b"anthropic-beta", b"x, a"), (b"anthropic-beta", b"y")]
    head = request_head(b"GET", b"/v1/models", b"h", client, 0, Key(b""), frozenset({"a"}))
    assert head == (
        b"GET /v1/models HTTP/1.1\r\nhost: h\r\nanthropic-beta: a\r\n"
        b"accept-encoding: identity\r\nx-api-key: \r\n\r\n"
    )


def test_downstream_headers_drop_framing_and_keep_the_rest() -> None:
    upstream = [
        (b"Content-Type", b"text/event-stream"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Content-Length", b"5"),
        (b"Connection", b"close"),
        (b"request-id", b"req_1"),
        (b"retry-after", b"3"),
    ]
    assert downstream_headers(upstream) == [
        (b"Content-Type", b"text/event-stream"),
        (b"request-id", b"req_1"),
        (b"retry-after", b"3"),
    ]


def test_token_from_either_header_identifies_candidate_or_grader() -> None:
    token, grader = new_token(TokenKind.SESSION), new_token(TokenKind.GRADER)
    digest, grader_digest = hash_token(token), hash_token(grader)

    def who(api_key: str | None = None, authorization: str | None = None) -> str | None:
        tokens = presented_tokens(
            api_key.encode() if api_key is not None else None,
            authorization.encode() if authorization is not None else None,
        )
        return identify(tokens, digest, grader_digest)

    assert who(token) == "candidate"
    assert who(authorization=f"Bearer {token}") == "candidate"
    assert who("stale", f"Bearer {token}") == "candidate"
    assert who(grader) == "grader"
    assert who(token + "x") is None
    assert who(authorization=f"Basic {token}") is None
    assert who() is None
    assert identify([grader.encode()], digest, None) is None
    assert presented_tokens(None, b"bearer  abc ") == [b"abc"]
