"""Header rewriting: credentials replaced, hop-by-hop dropped, everything else kept."""

from __future__ import annotations

from core.tokens import TokenKind, hash_token, new_token
from proxy.auth import identify, presented_tokens
from proxy.headers import downstream_headers, upstream_headers


def test_upstream_headers_replace_credentials_and_keep_end_to_end_headers() -> None:
    client = [
        ("Host", "127.0.0.1:9"),
        ("x-api-key", "mxs_session"),
        ("Authorization", "Bearer mxs_session"),
        ("Proxy-Authorization", "Basic x"),
        ("Connection", "keep-alive, X-Hop"),
        ("X-Hop", "1"),
        ("TE", "trailers"),
        ("Content-Length", "10"),
        ("Accept-Encoding", "gzip, br"),
        ("anthropic-beta", "a,b"),
        ("anthropic-beta", "c"),
        ("X-Stainless-Retry-Count", "0"),
        ("x-app", "cli"),
    ]
    out = upstream_headers(client, "sk-real")
    assert list(out.items()) == [
        ("anthropic-beta", "a,b"),
        ("anthropic-beta", "c"),
        ("X-Stainless-Retry-Count", "0"),
        ("x-app", "cli"),
        ("x-api-key", "sk-real"),
        ("accept-encoding", "identity"),
    ]


def test_downstream_headers_drop_framing_and_keep_the_rest() -> None:
    upstream = [
        ("Content-Type", "text/event-stream"),
        ("Transfer-Encoding", "chunked"),
        ("Content-Length", "5"),
        ("Connection", "close"),
        ("request-id", "req_1"),
        ("retry-after", "3"),
    ]
    assert list(downstream_headers(upstream).items()) == [
        ("Content-Type", "text/event-stream"),
        ("request-id", "req_1"),
        ("retry-after", "3"),
    ]


def test_token_from_either_header_identifies_candidate_or_grader() -> None:
    token, grader = new_token(TokenKind.SESSION), new_token(TokenKind.GRADER)
    digest, grader_digest = hash_token(token), hash_token(grader)

    def who(headers: dict[str, str]) -> str | None:
        return identify(headers, digest, grader_digest)

    assert who({"x-api-key": token}) == "candidate"
    assert who({"authorization": f"Bearer {token}"}) == "candidate"
    assert who({"x-api-key": "stale", "authorization": f"Bearer {token}"}) == "candidate"
    assert who({"x-api-key": grader}) == "grader"
    assert who({"x-api-key": token + "x"}) is None
    assert who({"authorization": f"Basic {token}"}) is None
    assert who({}) is None
    assert identify({"x-api-key": grader}, digest, None) is None
    assert presented_tokens({"authorization": "bearer  abc "}) == ["abc"]
