"""Session evidence over HTTP: the digest chain, the report (JSON, CSV, HTML) and report links."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from control import appkeys
from control.audit import store as audit
from control.audit.actions import AuditAction
from control.db.schema import audit_events, report_links
from control.evidence.html import render_report
from control.evidence.report import build_report, calls_csv, digest_document
from control.sessions import store as session_store
from control.sessions.store import SessionRecord
from control.usage import store as usage_store
from control.web.auth import authenticate, current_principal, request_actor
from control.web.endpoint import ANY_MEMBER, PUBLIC, Auth, endpoint
from control.web.errors import ApiError, not_found, unauthenticated
from core.tokens import TokenKind, hash_token, new_token, token_kind

routes = web.RouteTableDef()
LINK_LIFETIME = dt.timedelta(hours=1)
COOKIE = "mx_report"
# The page runs no script and loads nothing: nothing else is allowed.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


async def _session_events(conn: AsyncConnection, session: SessionRecord) -> list[Any]:
    rows = await conn.execute(
        select(audit_events)
        .where(
            audit_events.c.tenant_id == session.tenant_id,
            audit_events.c.session_id_text == session.id,
        )
        .order_by(audit_events.c.id)
    )
    return await audit.to_events(conn, list(rows))


def _seal(events: list[Any]) -> dict[str, Any] | None:
    event = next((e for e in reversed(events) if e.action == AuditAction.SESSION_SEAL), None)
    if event is None:
        return None
    return {
        "at": event.occurred_at.isoformat(),
        "calls": int(event.details["calls"]),
        "final_link": event.details["final_link"],
    }


async def _evidence(
    request: web.Request, tenant_id: str, session_id: str
) -> tuple[SessionRecord, list[dict[str, Any]], list[Any], list[dict[str, Any]]]:
    """The session, its usage records, its audit events and its chain entries."""
    async with request.app[appkeys.engine].connect() as conn:
        session = await session_store.get_session(conn, session_id, tenant_id=tenant_id)
        if session is None:
            raise not_found("session")
        records = await usage_store.list_records(conn, session_id)
        events = await _session_events(conn, session)
        entries = await usage_store.chain_entries(conn, session_id)
    return session, records, events, entries


async def _report(request: web.Request, tenant_id: str, session_id: str) -> dict[str, Any]:
    session, records, events, entries = await _evidence(request, tenant_id, session_id)
    return build_report(session, records, events, entries, request.app[appkeys.prices])


@routes.get("/v1/sessions/{session_id}/digest")
@endpoint(
    "The session's transcript digest chain, its check and its seal "
    "(what `metrux verify-transcript` compares a transcript with)",
    access=ANY_MEMBER,
)
async def digest(request: web.Request) -> web.Response:
    session_id = request.match_info["session_id"]
    _, _, events, entries = await _evidence(
        request, current_principal(request).tenant_id, session_id
    )
    return web.json_response(digest_document(session_id, entries, _seal(events)))


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
    tenant_id = current_principal(request).tenant_id
    now = dt.datetime.now(dt.UTC)
    token = new_token(TokenKind.REPORT)
    async with request.app[appkeys.engine].begin() as conn:
        if await session_store.get_session(conn, session_id, tenant_id=tenant_id) is None:
            raise not_found("session")
        await conn.execute(
            insert(report_links).values(
                token_hash=hash_token(token),
                session_id=session_id,
                tenant_id=tenant_id,
                expires_at=now + LINK_LIFETIME,
                created_at=now,
                created_by=request_actor(request).id,
            )
        )
        await audit.record(
            conn,
            request_actor(request),
            AuditAction.SESSION_REPORT_LINK,
            tenant_id=tenant_id,
            target_type="session",
            target_id=session_id,
            session_id=session_id,
            details={"expires_at": (now + LINK_LIFETIME).isoformat()},
            now=now,
        )
    url = f"{request.app[appkeys.settings].public_url}/sessions/{session_id}?access={token}"
    return web.json_response(
        {"url": url, "expires_at": (now + LINK_LIFETIME).isoformat()},
        status=201,
        headers={"Cache-Control": "no-store"},
    )


async def _link_tenant(request: web.Request, session_id: str, token: str | None) -> str | None:
    """The tenant a live report link for this session belongs to, else None."""
    if token is None or token_kind(token) is not TokenKind.REPORT:
        return None
    async with request.app[appkeys.engine].connect() as conn:
        row = (
            await conn.execute(
                select(report_links.c.tenant_id).where(
                    report_links.c.token_hash == hash_token(token),
                    report_links.c.session_id == session_id,
                    report_links.c.expires_at > dt.datetime.now(dt.UTC),
                )
            )
        ).first()
    return None if row is None else str(row.tenant_id)


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
        if await _link_tenant(request, session_id, link) is None:
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
    tenant_id = await _link_tenant(request, session_id, request.cookies.get(COOKIE))
    if tenant_id is None:
        if "Authorization" not in request.headers:
            raise _refused()
        tenant_id = (await authenticate(request)).tenant_id
    report = await _report(request, tenant_id, session_id)
    return web.Response(text=render_report(report), content_type="text/html", headers=PAGE_HEADERS)
