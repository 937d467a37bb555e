"""/v1/auth/handoff and /v1/auth/logout: members signing in through the identity provider.

The dashboard signs the member in with the identity provider (Clerk, or another OIDC
issuer) and posts the provider's JWT here; the service verifies it, finds the member by
the verified email, and answers with its own session cookie and a CSRF token.
"""

from __future__ import annotations

import datetime as dt

from aiohttp import web
from pydantic import BaseModel, Field
from sqlalchemy import select

from control import appkeys
from control.audit import store as audit
from control.audit.actions import ActorType, AuditAction
from control.db.schema import members, tenants
from control.identity import sessions
from control.identity.oidc import MAX_TOKEN_CHARS, IdentityError, JwksVerifier, KeysUnavailable
from control.members.schemas import normalise_email
from control.web.auth import actor_for, current_principal, request_actor, set_session_cookie
from control.web.context import parse_json
from control.web.endpoint import ANY_MEMBER, PUBLIC, Auth, endpoint
from control.web.errors import ApiError, unauthenticated

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


def _verifier(app: web.Application) -> JwksVerifier:
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
    verifier = _verifier(request.app)
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
    if identity.email is None or identity.email_verified is False:
        raise unauthenticated("identity token refused: it carries no verified email")
    email = normalise_email(identity.email)
    settings = request.app[appkeys.settings]
    now = dt.datetime.now(dt.UTC)
    async with request.app[appkeys.engine].begin() as conn:
        query = (
            select(members.c.id, members.c.tenant_id, members.c.role)
            .join(tenants, tenants.c.id == members.c.tenant_id)
            .where(
                members.c.email == email,
                members.c.revoked_at.is_(None),
                tenants.c.closed_at.is_(None),
            )
        )
        if body.tenant_id is not None:
            query = query.where(members.c.tenant_id == body.tenant_id)
        found = (await conn.execute(query)).all()
        if not found:
            raise ApiError(403, "permission_error", "this identity is not a member of any tenant")
        if len(found) > 1:
            raise ApiError(
                409,
                "conflict_error",
                "this identity belongs to several tenants: name one in tenant_id "
                f"({', '.join(sorted(row.tenant_id for row in found))})",
            )
        member = found[0]
        # A cookie from before is replaced, never extended (no session fixation).
        previous = request.cookies.get(sessions.SESSION_COOKIE)
        if previous:
            old = await sessions.find_live(conn, previous, now)
            if old is not None:
                await sessions.revoke(conn, old.token_hash, "replaced", now)
        issued = await sessions.issue(
            conn,
            member_id=member.id,
            tenant_id=member.tenant_id,
            role=member.role,
            subject=identity.subject,
            lifetime=dt.timedelta(hours=settings.member_session_hours),
            now=now,
        )
        await audit.record(
            conn,
            actor_for(request, ActorType.MEMBER, member.id),
            AuditAction.AUTH_HANDOFF,
            tenant_id=member.tenant_id,
            target_type="member",
            target_id=member.id,
            details={"subject": identity.subject, "expires_at": issued.expires_at.isoformat()},
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
    now = dt.datetime.now(dt.UTC)
    async with request.app[appkeys.engine].begin() as conn:
        await sessions.revoke(conn, principal.session_hash, "logout", now)
        await audit.record(
            conn,
            request_actor(request),
            AuditAction.AUTH_LOGOUT,
            tenant_id=principal.tenant_id,
            target_type="member",
            target_id=principal.member_id,
        )
    response = web.Response(status=204)
    response.del_cookie(sessions.SESSION_COOKIE, path="/")
    return response
