"""/v1/auth/handoff and /v1/auth/logout: members signing in through the identity provider.

The dashboard signs the member in with the identity provider (Clerk, or another OIDC
issuer) and posts the provider's JWT here; the service verifies it, finds the member by
the verified email, and answers with its own session cookie and a CSRF token.
"""

from __future__ import annotations

import datetime as dt

from aiohttp import web
from pydantic import BaseModel, Field

from control import appkeys
from control.audit.actions import ActorType
from control.audit.actors import actor_for, request_actor
from control.identity import service
from control.identity.middleware import set_session_cookie
from control.identity.oidc import MAX_TOKEN_CHARS, IdentityError, JwksVerifier, KeysUnavailable
from control.web.context import parse_json
from control.web.endpoint import ANY_MEMBER, PUBLIC, Auth, endpoint
from control.web.errors import ApiError, unauthenticated
from control.web.principal import SESSION_COOKIE, current_principal

routes = web.RouteTableDef()
verifier_key = web.AppKey("oidc_verifier", JwksVerifier)


class HandoffIn(BaseModel):
    token: str = Field(min_length=1, max_length=MAX_TOKEN_CHARS, description="the IdP's JWT")
    tenant_id: str | None = Field(
        default=None, max_length=36, description="which tenant, if the member belongs to several"
    )


class HandoffOut(BaseModel):
    member_id: str
    tenant_id: str
    role: str
    expires_at: dt.datetime
    csrf_token: str = Field(description="send back in X-CSRF-Token on every unsafe request")


def install_verifier(app: web.Application) -> None:
    """Set up JWT verification at app creation when METRUX_OIDC_* is configured."""
    settings = app[appkeys.settings]
    if settings.oidc_jwks_url is not None and settings.oidc_issuer is not None:
        app[verifier_key] = JwksVerifier(
            settings.oidc_jwks_url,
            settings.oidc_issuer,
            settings.oidc_audience,
            settings.oidc_algorithms,
        )


def verifier_of(app: web.Application) -> JwksVerifier:
    verifier = app.get(verifier_key)
    if verifier is None:
        raise ApiError(
            404, "not_found_error", "sign-in through an identity provider is not enabled"
        )
    return verifier


@routes.post("/v1/auth/handoff")
@endpoint(
    "Trade an identity provider's JWT for a member session cookie and its CSRF token",
    access=PUBLIC,
    auth=Auth.NONE,
    body=HandoffIn,
    response=HandoffOut,
)
async def handoff(request: web.Request) -> web.Response:
    body = await parse_json(request, HandoffIn)
    verifier = verifier_of(request.app)
    try:
        identity = await verifier.verify(body.token)
    except IdentityError as exc:
        raise unauthenticated(f"identity token refused: {exc}") from None
    except KeysUnavailable:
        raise ApiError(
            503,
            "unavailable",
            "the identity provider's keys cannot be fetched; retry shortly",
            headers={"Retry-After": "5"},
        ) from None
    member, issued = await service.sign_in(
        request.app[appkeys.engine],
        identity,
        actor_for(request, ActorType.MEMBER, None),
        tenant_id=body.tenant_id,
        previous_cookie=request.cookies.get(SESSION_COOKIE),
        lifetime=dt.timedelta(hours=request.app[appkeys.settings].member_session_hours),
        now=dt.datetime.now(dt.UTC),
    )
    out = HandoffOut(
        member_id=member.id,
        tenant_id=member.tenant_id,
        role=member.role,
        expires_at=issued.expires_at,
        csrf_token=issued.csrf_token,
    )
    response = web.json_response(out.model_dump(mode="json"))
    set_session_cookie(response, issued)
    return response


@routes.post("/v1/auth/logout")
@endpoint(
    "End the browser session this request's cookie carries (it stops working everywhere)",
    access=ANY_MEMBER,
    status=204,
)
async def logout(request: web.Request) -> web.Response:
    principal = current_principal(request)
    if principal.session_hash is None:
        raise ApiError(400, "invalid_request_error", "no browser session to end: this is a token")
    await service.sign_out(
        request.app[appkeys.engine],
        request_actor(request),
        tenant_id=principal.tenant_id,
        member_id=principal.member_id,
        session_hash=principal.session_hash,
        now=dt.datetime.now(dt.UTC),
    )
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response
