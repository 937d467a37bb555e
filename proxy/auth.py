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


def token_matches(token: str, expected_sha256: str) -> bool:
    digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()
    return hmac.compare_digest(digest.encode(), expected_sha256.encode())


def identify(
    headers: Mapping[str, str], candidate_sha256: str, grader_sha256: str | None
) -> str | None:
    """Who is calling: "candidate", "grader", or None for no valid credential."""
    for token in presented_tokens(headers):
        if token_matches(token, candidate_sha256):
            return "candidate"
        if grader_sha256 is not None and token_matches(token, grader_sha256):
            return "grader"
    return None
