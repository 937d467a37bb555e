"""Signing in to the console with a one-time link, and signing out."""

from __future__ import annotations

import datetime as dt

from aiohttp import web

from control import appkeys
from control.audit.actions import ActorType
from control.audit.actors import actor_for, request_actor
from control.console.page import CSRF_COOKIE, redirect, render
from control.identity import service
from control.identity.middleware import set_session_cookie
from control.identity.store import IssuedSession
from control.web.endpoint import ANY_MEMBER, PUBLIC, Auth, endpoint
from control.web.errors import ApiError
from control.web.principal import SESSION_COOKIE, current_principal

routes = web.RouteTableDef()


@routes.get("/console/signin")
@endpoint("The console's sign-in page", access=PUBLIC, auth=Auth.NONE, tag="console")
async def signin_page(request: web.Request) -> web.Response:
    # A GET never spends the link (mail scanners fetch links): the button posts it.
    token = request.query.get("token", "")
    return render(
        request,
        "signin.html",
        {
            "token": token[:200],
            "next": landing_page(request.query.get("next")),
            "oidc": request.app[appkeys.settings].oidc_authorize_url is not None,
        },
    )


def landing_page(value: object) -> str:
    """Where to land after signing in: a console page of this origin, else the overview."""
    safe = (
        isinstance(value, str)
        and value.startswith("/console/")
        and value.isascii()
        and len(value) <= 200
        and "//" not in value
        and "\\" not in value
    )
    return str(value) if safe else "/console/"


@routes.post("/console/signin")
@endpoint("Spend a one-time sign-in link", access=PUBLIC, auth=Auth.NONE, tag="console")
async def signin(request: web.Request) -> web.Response:
    form = await request.post()
    token = form.get("token")
    if not isinstance(token, str) or not token:
        raise ApiError(422, "validation_error", "the sign-in form carries no link token")
    _, issued = await service.sign_in_with_link(
        request.app[appkeys.engine],
        token,
        actor_for(request, ActorType.MEMBER, None),
        previous_cookie=request.cookies.get(SESSION_COOKIE),
        lifetime=dt.timedelta(hours=request.app[appkeys.settings].member_session_hours),
        now=dt.datetime.now(dt.UTC),
    )
    response = redirect(landing_page(form.get("next")))
    set_console_cookies(response, issued)
    return response


def set_console_cookies(response: web.StreamResponse, issued: IssuedSession) -> None:
    """The session cookie (as the handoff sets it) and its CSRF token for the forms."""
    set_session_cookie(response, issued)
    response.set_cookie(
        CSRF_COOKIE,
        issued.csrf_token,
        max_age=max(0, int((issued.expires_at - dt.datetime.now(dt.UTC)).total_seconds())),
        path="/console",
        httponly=True,
        secure=True,
        samesite="Strict",
    )


@routes.post("/console/signout")
@endpoint("Sign out: the session ends on the server", access=ANY_MEMBER, tag="console")
async def signout(request: web.Request) -> web.Response:
    principal = current_principal(request)
    if principal.session_hash is not None:
        await service.sign_out(
            request.app[appkeys.engine],
            request_actor(request),
            tenant_id=principal.tenant_id,
            member_id=principal.member_id,
            session_hash=principal.session_hash,
            now=dt.datetime.now(dt.UTC),
        )
    response = redirect("/console/signin?notice=signed_out")
    response.del_cookie(SESSION_COOKIE, path="/")
    response.del_cookie(CSRF_COOKIE, path="/console")
    return response
