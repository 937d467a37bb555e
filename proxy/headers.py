"""Header rewriting between the sandbox and Anthropic. Pure functions.

Upstream: end-to-end headers pass as they are (anthropic-version, anthropic-beta, user-agent,
x-stainless-*, x-app, custom headers); hop-by-hop headers, Host, Content-Length and every
client credential are dropped; the real key goes in x-api-key; the response is asked for
uncompressed so the meter can read it. Downstream: hop-by-hop headers and lengths are dropped
(aiohttp frames the response itself); everything else passes, request-id and rate-limit
headers included.
"""

from __future__ import annotations

from collections.abc import Iterable

from multidict import CIMultiDict

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
_REQUEST_DROP = HOP_BY_HOP | {
    "host",
    "content-length",
    "x-api-key",
    "authorization",
    "accept-encoding",
    "expect",
}
_RESPONSE_DROP = HOP_BY_HOP | {"content-length"}


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    # Headers named in Connection are hop-by-hop too (RFC 9110 §7.6.1).
    return {
        token.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for token in value.split(",")
    }


def upstream_headers(client: Iterable[tuple[str, str]], api_key: str) -> CIMultiDict[str]:
    items = list(client)
    drop = _REQUEST_DROP | _connection_tokens(items)
    out: CIMultiDict[str] = CIMultiDict(
        (name, value) for name, value in items if name.lower() not in drop
    )
    out["x-api-key"] = api_key
    out["accept-encoding"] = "identity"
    return out


def downstream_headers(upstream: Iterable[tuple[str, str]]) -> CIMultiDict[str]:
    items = list(upstream)
    drop = _RESPONSE_DROP | _connection_tokens(items)
    return CIMultiDict((name, value) for name, value in items if name.lower() not in drop)
