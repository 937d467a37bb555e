"""Header rewriting between the sandbox and Anthropic. Pure functions.

Upstream: end-to-end headers pass as they are (anthropic-version, anthropic-beta, user-agent,
x-stainless-*, x-app, custom headers); hop-by-hop headers, Host, Content-Length, forwarding
headers (x-forwarded-*, forwarded) and every client credential are dropped; a session may
restrict anthropic-beta to an allowlist; the real key goes in x-api-key; the response is asked for
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
    # The sandbox does not get to say where or for whom the call goes.
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-real-ip",
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


def allowed_beta_values(value: str, allowed: frozenset[str]) -> str:
    """The comma-separated anthropic-beta values that are in `allowed`, in order."""
    return ",".join(v.strip() for v in value.split(",") if v.strip() in allowed)


def upstream_headers(
    client: Iterable[tuple[str, str]],
    api_key: str,
    allowed_betas: frozenset[str] | None = None,
) -> CIMultiDict[str]:
    items = list(client)
    drop = _REQUEST_DROP | _connection_tokens(items)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in items:
        lower = name.lower()
        if lower in drop:
            continue
        if allowed_betas is not None and lower == "anthropic-beta":
            value = allowed_beta_values(value, allowed_betas)
            if not value:
                continue
        out.add(name, value)
    out["x-api-key"] = api_key
    out["accept-encoding"] = "identity"
    return out


def downstream_headers(upstream: Iterable[tuple[str, str]]) -> CIMultiDict[str]:
    items = list(upstream)
    drop = _RESPONSE_DROP | _connection_tokens(items)
    return CIMultiDict((name, value) for name, value in items if name.lower() not in drop)
