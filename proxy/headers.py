"""Header rewriting between the sandbox and Anthropic, and the heads it writes. Pure.

Upstream: end-to-end headers pass as they are (anthropic-version, anthropic-beta, user-agent,
x-stainless-*, x-app, custom headers); hop-by-hop headers, Host, Content-Length, Expect,
forwarding headers (x-forwarded-*, forwarded) and every client credential are dropped; a
session may restrict anthropic-beta to an allowlist; the response is asked for uncompressed
so the meter can read it, and the real key goes in x-api-key. The head is built in a
`bytearray` the caller zeroes once it is sent: the key is never in an immutable object.

Downstream: hop-by-hop headers, lengths (the proxy frames the response itself), cookies and
anthropic-organization-id are dropped; everything else passes, request-id and rate-limit
headers included.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

Headers = list[tuple[bytes, bytes]]


class Secret(Protocol):
    """The key, as the head needs it (proxy.keyring.SessionKey)."""

    @property
    def size(self) -> int: ...

    def copy_into(self, target: memoryview) -> None: ...


def with_secret(prefix: bytes, secret: Secret, suffix: bytes) -> bytearray:
    """`prefix + secret + suffix` in one buffer allocated at its final size, so no copy of
    the secret is left behind by a buffer that grows; the caller zeroes it once sent."""
    start = len(prefix)
    end = start + secret.size
    out = bytearray(end + len(suffix))
    out[:start] = prefix
    with memoryview(out) as view:
        secret.copy_into(view[start:end])
    out[end:] = suffix
    return out


HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
_REQUEST_DROP = HOP_BY_HOP | {
    b"host",
    b"content-length",
    b"x-api-key",
    b"authorization",
    b"accept-encoding",
    b"expect",
    # The sandbox does not get to say where or for whom the call goes.
    b"forwarded",
    b"x-forwarded-for",
    b"x-forwarded-host",
    b"x-forwarded-proto",
    b"x-forwarded-port",
    b"x-real-ip",
}
# Cookies (the sandbox has no business with the upstream's) and the customer's Anthropic
# organization id (it identifies the customer to whoever holds it) never reach the sandbox.
# Rate-limit and request-id headers pass: Claude Code reads them.
_RESPONSE_DROP = HOP_BY_HOP | {b"content-length", b"set-cookie", b"anthropic-organization-id"}


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    # Headers named in Connection are hop-by-hop too (RFC 9110 §7.6.1).
    return frozenset(
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.split(b",")
    )


def allowed_beta_values(value: bytes, allowed: frozenset[str]) -> bytes:
    """The comma-separated anthropic-beta values that are in `allowed`, in order."""
    kept = [v.strip() for v in value.split(b",") if v.strip().decode("latin-1") in allowed]
    return b",".join(kept)


def upstream_headers(
    client: Headers, allowed_betas: frozenset[str] | None = None
) -> Iterable[tuple[bytes, bytes]]:
    """The client's headers that go upstream, in their order, as sent."""
    drop = _REQUEST_DROP
    if any(name.lower() == b"connection" for name, _ in client):
        drop = drop | _connection_tokens(client)
    for name, value in client:
        lower = name.lower()
        if lower in drop:
            continue
        if allowed_betas is not None and lower == b"anthropic-beta":
            value = allowed_beta_values(value, allowed_betas)
            if not value:
                continue
        yield name, value


def request_head(
    method: bytes,
    target: bytes,
    host: bytes,
    client: Headers,
    body_length: int,
    key: Secret,
    allowed_betas: frozenset[str] | None = None,
) -> bytearray:
    """The upstream request head, with the key as x-api-key, in a buffer to zero once sent."""
    lines = [b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (method, target, host)]
    lines.extend(b"%s: %s\r\n" % pair for pair in upstream_headers(client, allowed_betas))
    if body_length or method in (b"POST", b"PUT", b"PATCH"):
        lines.append(b"content-length: %d\r\n" % body_length)
    lines.append(b"accept-encoding: identity\r\nx-api-key: ")
    return with_secret(b"".join(lines), key, b"\r\n\r\n")


def downstream_headers(upstream: Headers) -> Headers:
    drop = _RESPONSE_DROP
    if any(name.lower() == b"connection" for name, _ in upstream):
        drop = drop | _connection_tokens(upstream)
    return [(name, value) for name, value in upstream if name.lower() not in drop]
