"""Sandbox authentication: the session token from x-api-key or Authorization: Bearer.

Pure functions. The presented token is hashed and the digest compared in constant time, so
no comparison leaks how much of a guess was right.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping


def presented_tokens(headers: Mapping[str, str]) -> list[str]:
    """Every credential the client sent: x-api-key, then a Bearer token (Claude Code with
    both ANTHROPIC_API_KEY and ANTHROPIC_AUTH_TOKEN set sends both)."""
    tokens = []
    api_key = headers.get("x-api-key")
    if api_key:
        tokens.append(api_key.strip())
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        tokens.append(value.strip())
    return tokens


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest().encode()


def identify(
    headers: Mapping[str, str], candidate_sha256: str, grader_sha256: str | None
) -> str | None:
    """Who is calling: "candidate", "grader", or None for no valid credential."""
    for token in presented_tokens(headers):
        digest = _digest(token)
        if hmac.compare_digest(digest, candidate_sha256.encode()):
            return "candidate"
        if grader_sha256 is not None and hmac.compare_digest(digest, grader_sha256.encode()):
            return "grader"
    return None
