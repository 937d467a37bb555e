"""Signing in to the console through the identity provider: OpenID Connect's authorization
code flow with PKCE (RFC 7636), for a public client.

1. `GET /console/signin/oidc` makes a state, a nonce and a PKCE verifier, keeps them in
   Redis for ten minutes under the state's hash, binds the state to this browser in an
   HttpOnly cookie, and sends the browser to the provider's authorization endpoint.
2. `GET /console/signin/oidc/callback` checks the state against the cookie, takes the
   flight from Redis (once), trades the code and the verifier for an ID token at the
   token endpoint, verifies the token as the handoff does (signature, issuer, audience,
   a verified email) plus the nonce, and ends in the same session cookie.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
from typing import Any
from urllib.parse import urlencode

import aiohttp
import structlog
from aiohttp import web
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from control import appkeys
from control.audit.actions import ActorType
from control.audit.actors import actor_for
from control.console.page import redirect
from control.console.signin import landing_page, set_console_cookies
from control.identity import service
from control.identity.oidc import IdentityError, KeysUnavailable
from control.identity.views import verifier_of
from control.web.endpoint import PUBLIC, Auth, endpoint
from control.web.errors import ApiError, unauthenticated
from control.web.principal import SESSION_COOKIE
from core.tokens import hash_token

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()
STATE_COOKIE = "metrux_oidc_state"
FLIGHT_S = 600
_TOKEN_TIMEOUT = aiohttp.ClientTimeout(total=10)


def _configured(app: web.Application) -> tuple[str, str, str]:
    settings = app[appkeys.settings]
    if not (settings.oidc_authorize_url and settings.oidc_token_url and settings.oidc_client_id):
        raise ApiError(404, "not_found_error", "sign-in through an identity provider is not set up")
    return settings.oidc_authorize_url, settings.oidc_token_url, settings.oidc_client_id


def _callback_url(app: web.Application) -> str:
    return f"{app[appkeys.settings].public_url}/console/signin/oidc/callback"


@routes.get("/console/signin/oidc")
@endpoint("Sign in through the identity provider", access=PUBLIC, auth=Auth.NONE, tag="console")
async def start(request: web.Request) -> web.Response:
    authorize_url, _, client_id = _configured(request.app)
    state, nonce, verifier = generate_token(43), generate_token(43), generate_token(64)
    flight = {"nonce": nonce, "verifier": verifier, "next": landing_page(request.query.get("next"))}
    names = request.app[appkeys.names]
    await request.app[appkeys.redis].set(
        names.oidc_login_key(hash_token(state)), json.dumps(flight), ex=FLIGHT_S
    )
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": _callback_url(request.app),
            "scope": "openid email",
            "state": state,
            "nonce": nonce,
            "code_challenge": create_s256_code_challenge(verifier),
            "code_challenge_method": "S256",
        }
    )
    response = redirect(f"{authorize_url}?{query}")
    response.set_cookie(
        STATE_COOKIE, state, max_age=FLIGHT_S, path="/console/signin/oidc",
        httponly=True, secure=True, samesite="Lax",
    )  # fmt: skip
    return response


def _refused(why: str) -> ApiError:
    return unauthenticated(f"sign-in through the identity provider failed: {why}")


async def _id_token(app: web.Application, code: str, verifier: str) -> str:
    _, token_url, client_id = _configured(app)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": _callback_url(app),
        "client_id": client_id,
        "code_verifier": verifier,
    }
    try:
        async with (
            aiohttp.ClientSession(timeout=_TOKEN_TIMEOUT) as http,
            http.post(token_url, data=form) as answer,
        ):
            body: Any = await answer.json(content_type=None)
            status = answer.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        log.warning("oidc_token_endpoint_failed", error=type(exc).__name__)
        raise ApiError(
            503, "unavailable", "the identity provider cannot be reached; retry shortly",
            headers={"Retry-After": "5"},
        ) from None  # fmt: skip
    token = body.get("id_token") if isinstance(body, dict) else None
    if status != 200 or not isinstance(token, str):
        raise _refused("the identity provider did not issue an ID token")
    return token


@routes.get("/console/signin/oidc/callback")
@endpoint(
    "Where the identity provider sends the browser back", access=PUBLIC, auth=Auth.NONE,
    tag="console",
)  # fmt: skip
async def callback(request: web.Request) -> web.Response:
    state, code = request.query.get("state", ""), request.query.get("code", "")
    bound = request.cookies.get(STATE_COOKIE, "")
    if not state or not code or not hmac.compare_digest(state.encode(), bound.encode()):
        raise _refused("this sign-in did not start in this browser, or it expired")
    names = request.app[appkeys.names]
    raw = await request.app[appkeys.redis].getdel(names.oidc_login_key(hash_token(state)))
    if raw is None:
        raise _refused("this sign-in expired or was already used")
    flight = json.loads(raw)
    token = await _id_token(request.app, code, flight["verifier"])
    try:
        identity = await verifier_of(request.app).verify(token)
    except IdentityError as exc:
        raise _refused(str(exc)) from None
    except KeysUnavailable:
        raise ApiError(
            503, "unavailable", "the identity provider's keys cannot be fetched; retry shortly",
            headers={"Retry-After": "5"},
        ) from None  # fmt: skip
    if identity.nonce is None or not hmac.compare_digest(identity.nonce, flight["nonce"]):
        raise _refused("the ID token was not issued for this sign-in")
    _, issued = await service.sign_in(
        request.app[appkeys.engine],
        identity,
        actor_for(request, ActorType.MEMBER, None),
        tenant_id=None,
        previous_cookie=request.cookies.get(SESSION_COOKIE),
        lifetime=dt.timedelta(hours=request.app[appkeys.settings].member_session_hours),
        now=dt.datetime.now(dt.UTC),
    )
    response = redirect(flight["next"])
    set_console_cookies(response, issued)
    response.del_cookie(STATE_COOKIE, path="/console/signin/oidc")
    return response
