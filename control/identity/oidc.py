"""Verifying an identity provider's JWT (Clerk, or any OIDC issuer) against its JWKS.

The checks: the signature, by a key from the configured JWKS URL picked by `kid`; the
algorithm, from a configured allowlist of asymmetric algorithms only (so `alg: none` and
HS256-with-the-public-key confusion fail); `iss` equal to the configured issuer; `aud`
when an audience is configured; `exp`, `iat` and `sub` present, with 30 s of leeway for
clock skew. Keys are fetched with aiohttp and cached; an unknown `kid` refetches, at most
once a minute, so a flood of forged kids cannot make us hammer the provider.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import Any

import aiohttp
import jwt
import structlog
from jwt.types import Options

log = structlog.get_logger(__name__)
CACHE_TTL_S = 600.0
REFETCH_MIN_INTERVAL_S = 60.0
LEEWAY_S = 30
MAX_TOKEN_CHARS = 8192


class IdentityError(Exception):
    """The token is not acceptable; the message says why without echoing the token."""


class KeysUnavailable(Exception):
    """The identity provider's JWKS could not be fetched: nobody can be verified now."""


@dataclasses.dataclass(frozen=True, slots=True)
class Identity:
    subject: str
    email: str | None
    email_verified: bool | None
    nonce: str | None = None  # set by the console's sign-in; the handoff sends none


class JwksVerifier:
    def __init__(
        self,
        jwks_url: str,
        issuer: str,
        audience: str | None,
        algorithms: tuple[str, ...],
    ) -> None:
        self._url = jwks_url
        self._issuer = issuer
        self._audience = audience
        self._algorithms = list(algorithms)
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def _refresh(self, *, forced: bool) -> None:
        async with self._lock:
            age = time.monotonic() - self._fetched_at
            if (forced and age < REFETCH_MIN_INTERVAL_S) or (not forced and age < CACHE_TTL_S):
                return
            timeout = aiohttp.ClientTimeout(total=5)
            try:
                async with (
                    aiohttp.ClientSession(timeout=timeout, trust_env=False) as http,
                    http.get(self._url) as response,
                ):
                    if response.status != 200:
                        raise KeysUnavailable(f"JWKS answered {response.status}")
                    document = json.loads(await response.read())
            except (aiohttp.ClientError, TimeoutError, ValueError, KeysUnavailable) as exc:
                log.error("jwks_fetch_failed", error=type(exc).__name__)
                if self._keys and not forced:
                    # Keep the keys we have; ask the provider again in a minute.
                    self._fetched_at = time.monotonic() - CACHE_TTL_S + REFETCH_MIN_INTERVAL_S
                    return
                raise KeysUnavailable("identity provider keys unavailable") from None
            keys = {}
            for entry in document.get("keys", []) if isinstance(document, dict) else []:
                try:
                    key = jwt.PyJWK(entry)
                except (jwt.PyJWKError, jwt.InvalidKeyError):
                    continue  # a key type or algorithm we do not use
                if key.key_id:
                    keys[key.key_id] = key
            self._keys = keys
            self._fetched_at = time.monotonic()

    async def _key(self, kid: str) -> jwt.PyJWK:
        await self._refresh(forced=False)
        if kid not in self._keys:
            await self._refresh(forced=True)
        key = self._keys.get(kid)
        if key is None:
            raise IdentityError("token signed by an unknown key")
        return key

    def _header(self, token: str) -> tuple[str, str]:
        """The token's accepted signing algorithm and key id, before any key is fetched."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise IdentityError("token missing or too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise IdentityError("token is not a JWT") from None
        algorithm = header.get("alg")
        if algorithm not in self._algorithms:
            raise IdentityError(f"token algorithm {str(algorithm)[:16]!r} is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise IdentityError("token names no signing key (kid)")
        return str(algorithm), kid

    def _decode(self, token: str, key: jwt.PyJWK, algorithm: str) -> dict[str, Any]:
        """The verified claims; each way a token can fail says what failed."""
        options: Options = {"require": ["exp", "iat", "sub", "iss"]}
        if self._audience is None:
            options["verify_aud"] = False
        try:
            return jwt.decode(
                token,
                key=key.key,
                algorithms=[algorithm],
                issuer=self._issuer,
                audience=self._audience,
                leeway=LEEWAY_S,
                options=options,
            )
        except jwt.ExpiredSignatureError:
            raise IdentityError("token has expired") from None
        except jwt.InvalidIssuerError:
            raise IdentityError("token comes from another issuer") from None
        except jwt.InvalidAudienceError:
            raise IdentityError("token is for another audience") from None
        except jwt.MissingRequiredClaimError as exc:
            raise IdentityError(f"token lacks the {exc.claim!r} claim") from None
        except jwt.PyJWTError:
            raise IdentityError("token signature or claims are invalid") from None

    async def verify(self, token: str) -> Identity:
        algorithm, kid = self._header(token)
        claims = self._decode(token, await self._key(kid), algorithm)
        email = claims.get("email")
        verified = claims.get("email_verified")
        nonce = claims.get("nonce")
        return Identity(
            subject=str(claims["sub"])[:255],
            email=email if isinstance(email, str) else None,
            email_verified=verified if isinstance(verified, bool) else None,
            nonce=nonce if isinstance(nonce, str) else None,
        )
