"""Session evidence over HTTP: the digest chain, the report (JSON, CSV, HTML) and report links."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from control import appkeys
from control.audit.actions import AuditAction
from control.audit.actors import request_actor
from control.evidence import service
from control.evidence.html import render_report
from control.evidence.report import build_report, calls_csv, digest_document
from control.evidence.service import LINK_LIFETIME
from control.identity.middleware import authenticate
from control.web.endpoint import ANY_MEMBER, PUBLIC, Auth, endpoint
from control.web.errors import ApiError, unauthenticated
from control.web.principal import current_principal

routes = web.RouteTableDef()
COOKIE = "mx_report"
# The page runs no script and loads nothing: nothing else is allowed.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def _seal(events: list[Any]) -> dict[str, Any] | None:
    event = next((e for e in reversed(events) if e.action == AuditAction.SESSION_SEAL), None)
    if event is None:
        return None
    return {
        "at": event.occurred_at.isoformat(),
        "calls": int(event.details["calls"]),
        "final_link": event.details["final_link"],
    }


async def _report(request: web.Request, tenant_id: str, session_id: str) -> dict[str, Any]:
    found = await service.gather(request.app[appkeys.engine], tenant_id, session_id)
    return build_report(
        found.session, found.records, found.events, found.chain, request.app[appkeys.prices]
    )


@routes.get("/v1/sessions/{session_id}/digest")
@endpoint(
    "The session's transcript digest chain, its check and its seal "
    "(what `metrux verify-transcript` compares a transcript with)",
    access=ANY_MEMBER,
)
async def digest(request: web.Request) -> web.Response:
    session_id = request.match_info["session_id"]
    found = await service.gather(
        request.app[appkeys.engine], current_principal(request).tenant_id, session_id
    )
    return web.json_response(digest_document(session_id, found.chain, _seal(found.events)))


@routes.get("/v1/sessions/{session_id}/report")
@endpoint(
    "The session report: facts, calls with tokens and cost, totals, chain and seal, key events",
    access=ANY_MEMBER,
)
async def report_json(request: web.Request) -> web.Response:
    report = await _report(
        request, current_principal(request).tenant_id, request.match_info["session_id"]
    )
    return web.json_response(report)


@routes.get("/v1/sessions/{session_id}/report.csv")
@endpoint("The session's calls as CSV, one row per upstream call", access=ANY_MEMBER)
async def report_csv(request: web.Request) -> web.Response:
    session_id = request.match_info["session_id"]
    report = await _report(request, current_principal(request).tenant_id, session_id)
    return web.Response(
        text=calls_csv(report),
        content_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="session-{session_id}.csv"'},
    )


@routes.post("/v1/sessions/{session_id}/report-link")
@endpoint(
    "A link to the session's HTML report that works in a browser for one hour",
    access=ANY_MEMBER,
    status=201,
)
async def report_link(request: web.Request) -> web.Response:
    session_id = request.match_info["session_id"]
    token, expires_at = await service.create_link(
        request.app[appkeys.engine],
        request_actor(request),
        tenant_id=current_principal(request).tenant_id,
        session_id=session_id,
        now=dt.datetime.now(dt.UTC),
    )
    url = f"{request.app[appkeys.settings].public_url}/sessions/{session_id}?access={token}"
    return web.json_response(
        {"url": url, "expires_at": expires_at.isoformat()},
        status=201,
        headers={"Cache-Control": "no-store"},
    )


def _refused() -> ApiError:
    return unauthenticated(
        "open the report through a link from POST /v1/sessions/{id}/report-link, "
        "or send a member token",
    )


@routes.get("/sessions/{session_id}")
@endpoint(
    "The session report as a web page (no scripts, works offline)",
    access=PUBLIC,
    auth=Auth.REPORT,
)
async def report_page(request: web.Request) -> web.StreamResponse:
    session_id = request.match_info["session_id"]
    link = request.query.get("access")
    if link is not None:
        if await service.link_tenant(request.app[appkeys.engine], session_id, link) is None:
            raise _refused()
        # Trade the link for a cookie scoped to this page, and drop it from the address bar.
        response = web.Response(
            status=303, headers={**PAGE_HEADERS, "Location": f"/sessions/{session_id}"}
        )
        response.set_cookie(
            COOKIE,
            link,
            max_age=int(LINK_LIFETIME.total_seconds()),
            path=f"/sessions/{session_id}",
            httponly=True,
            secure=request.app[appkeys.settings].public_url.startswith("https:"),
            samesite="Strict",
        )
        return response
    tenant_id = await service.link_tenant(
        request.app[appkeys.engine], session_id, request.cookies.get(COOKIE)
    )
    if tenant_id is None:
        if "Authorization" not in request.headers:
            raise _refused()
        tenant_id = (await authenticate(request)).tenant_id
    report = await _report(request, tenant_id, session_id)
    return web.Response(text=render_report(report), content_type="text/html", headers=PAGE_HEADERS)
