"""Sandbox authentication: the session token from x-api-key or Authorization: Bearer.

Pure functions. The presented token is hashed and the digest compared in constant time, so
no comparison leaks how much of a guess was right.
"""

from __future__ import annotations

import hashlib
import hmac


def presented_tokens(api_key: bytes | None, authorization: bytes | None) -> list[bytes]:
    """Every credential the client sent: x-api-key, then a Bearer token (Claude Code with
    both ANTHROPIC_API_KEY and ANTHROPIC_AUTH_TOKEN set sends both)."""
    tokens = []
    if api_key and api_key.strip():
        tokens.append(api_key.strip())
    if authorization:
        scheme, _, value = authorization.strip().partition(b" ")
        if scheme.lower() == b"bearer" and value.strip():
            tokens.append(value.strip())
    return tokens


def identify(tokens: list[bytes], candidate_sha256: str, grader_sha256: str | None) -> str | None:
    """Who is calling: "candidate", "grader", or None for no valid credential."""
    for token in tokens:
        digest = hashlib.sha256(token).hexdigest().encode()
        if hmac.compare_digest(digest, candidate_sha256.encode()):
            return "candidate"
        if grader_sha256 is not None and hmac.compare_digest(digest, grader_sha256.encode()):
            return "grader"
    return None
