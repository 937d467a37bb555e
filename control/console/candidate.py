"""The candidate's pages: the invite landing page and its accept button, and the my-data
page (export, deletion request), signed in with the candidate token from accepting.

No page shows a credential that can attach a proxy: accepting issues none (the platform
gets the bootstrap token), and the candidate token and session token stay out of pages;
the candidate token rides in an HttpOnly cookie scoped to /me.
"""

from __future__ import annotations

import datetime as dt

from aiohttp import web

from control import appkeys
from control.audit.actions import ActorType
from control.audit.actors import actor_for
from control.candidates import service as candidate_service
from control.candidates.principal import current_candidate
from control.console.page import redirect, render
from control.identity.middleware import CANDIDATE_COOKIE
from control.invites import service as invite_service
from control.web.endpoint import PUBLIC, Auth, endpoint
from control.web.errors import ApiError

routes = web.RouteTableDef()
PRIVACY_POLICY_URL = "https://metrux.ai/privacy"


def _invalid_invite(request: web.Request) -> web.Response:
    # One page for unknown, expired and used links: it tells a guesser nothing.
    return render(request, "invite_invalid.html", {}, status=404)


@routes.get("/invite/{token}")
@endpoint("The candidate's invite page", access=PUBLIC, auth=Auth.NONE, tag="console")
async def invite_page(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    try:
        found = await invite_service.lookup_invite(request.app[appkeys.engine], token)
    except ApiError as exc:
        if exc.status != 404:
            raise
        return _invalid_invite(request)
    return render(
        request,
        "invite.html",
        {"invite": found, "token": token, "policy_url": PRIVACY_POLICY_URL},
    )


@routes.post("/invite/{token}/accept")
@endpoint("Accept an invite from its page", access=PUBLIC, auth=Auth.NONE, tag="console")
async def accept(request: web.Request) -> web.Response:
    try:
        accepted = await invite_service.accept_invite(
            request.app[appkeys.engine],
            request.app[appkeys.signals],
            actor_for(request, ActorType.CANDIDATE, None),
            token=request.match_info["token"],
        )
    except ApiError as exc:
        if exc.status == 409:  # the company's side is not ready (no usable key)
            raise ApiError(
                409,
                "conflict_error",
                "The company's setup is not complete, so your session cannot start yet. "
                "Try again later, or tell the company that invited you.",
            ) from None
        if exc.status != 404:
            raise
        return _invalid_invite(request)
    response = redirect("/me?notice=accepted")
    response.set_cookie(
        CANDIDATE_COOKIE,
        accepted.candidate_token,
        max_age=30 * 24 * 3600,
        path="/me",
        httponly=True,
        secure=True,
        samesite="Strict",
    )
    return response


@routes.get("/me")
@endpoint("The candidate's my-data page", access=PUBLIC, auth=Auth.CANDIDATE, tag="console")
async def my_data(request: web.Request) -> web.Response:
    candidate = current_candidate(request)
    data = await candidate_service.export(request.app[appkeys.engine], candidate)
    notice = {
        "accepted": "You accepted the invitation.",
        "deletion_requested": "Your deletion request is recorded.",
    }.get(request.query.get("notice", ""))
    return render(
        request,
        "me.html",
        {
            "candidate": candidate,
            "sessions": data["sessions"],
            "requests": data["deletion_requests"],
            "accepted": notice == "You accepted the invitation.",
            "candidate_notice": notice,
            "policy_url": PRIVACY_POLICY_URL,
        },
    )


@routes.get("/me/export")
@endpoint("Download my data (JSON)", access=PUBLIC, auth=Auth.CANDIDATE, tag="console")
async def export(request: web.Request) -> web.Response:
    data = await candidate_service.export(request.app[appkeys.engine], current_candidate(request))
    return web.json_response(
        data,
        dumps=candidate_service.export_json,
        headers={"Content-Disposition": 'attachment; filename="metrux-my-data.json"'},
    )


@routes.get("/me/delete")
@endpoint("Confirm a deletion request", access=PUBLIC, auth=Auth.CANDIDATE, tag="console")
async def confirm_delete(request: web.Request) -> web.Response:
    return render(request, "me_delete.html", {"candidate": current_candidate(request)})


@routes.post("/me/delete")
@endpoint("Ask for deletion from the my-data page", access=PUBLIC, auth=Auth.CANDIDATE,
          tag="console")  # fmt: skip
async def delete(request: web.Request) -> web.Response:
    candidate = current_candidate(request)
    await candidate_service.request_deletion(
        request.app[appkeys.engine],
        actor_for(request, ActorType.CANDIDATE, candidate.id),
        candidate,
        now=dt.datetime.now(dt.UTC),
    )
    return redirect("/me?notice=deletion_requested")
