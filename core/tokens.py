"""Bearer tokens: generation, hashing for storage, constant-time comparison.

Every token is 256 bits from `secrets` behind a type prefix (`mxk_` member API token, `mxs_`
session/sandbox token, `mxb_` proxy bootstrap token, `mxp_` an attached proxy's credential,
`mxi_` invite token, `mxg_` grader token, `mxc_` candidate token, `mxo_` platform operator
token, `mxr_` report link, `mxm_` member browser session, `mxf_` its CSRF token), so
redaction and secret scanners can spot them. Only the SHA-256 hex digest is stored; lookups
go by digest, so no secret is ever compared byte by byte in Python.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from enum import StrEnum


class TokenKind(StrEnum):
    MEMBER = "mxk"
    SESSION = "mxs"
    BOOTSTRAP = "mxb"
    PROXY = "mxp"  # an attached proxy's credential for its records and signals
    INVITE = "mxi"
    GRADER = "mxg"
    CANDIDATE = "mxc"
    OPERATOR = "mxo"
    REPORT = "mxr"
    MEMBER_SESSION = "mxm"  # a signed-in member's browser session (cookie)
    CSRF = "mxf"
    LOGIN_LINK = "mxl"  # a one-time console sign-in link (`metrux control login-link`)


TOKEN_BYTES = 32  # 256 bits
# token_urlsafe(32) gives 43 characters of [A-Za-z0-9_-].
_TOKEN_SHAPE = re.compile(r"^(mx[a-z])_([A-Za-z0-9_-]{43})$")


def new_token(kind: TokenKind) -> str:
    """Return a fresh token of `kind`: prefix, underscore, 256 random bits URL-safe."""
    return f"{kind.value}_{secrets.token_urlsafe(TOKEN_BYTES)}"


def hash_token(token: str) -> str:
    """SHA-256 hex digest of a token: the only form that is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_kind(token: str) -> TokenKind | None:
    """The kind of a well-formed token, or None if the string is not one of ours."""
    match = _TOKEN_SHAPE.match(token)
    if match is None:
        return None
    try:
        return TokenKind(match.group(1))
    except ValueError:
        return None


def tokens_match(presented: str, stored_hash: str) -> bool:
    """Constant-time check of a presented token against a stored digest."""
    return hmac.compare_digest(hash_token(presented).encode(), stored_hash.encode())
