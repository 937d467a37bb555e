"""The sessions pages: the list with filters, and a session's page (its calls, updating
itself while the session is live, its limits and how much of each is used, its key events)
with its actions: end it, issue a grader token (shown once), download or open the report."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web
from markupsafe import Markup

from control import appkeys
from control.audit.actors import request_actor
from control.console.page import day_range, redirect, render
from control.evidence import service as evidence
from control.evidence.html import usage_chart
from control.evidence.report import build_report
from control.members.schemas import normalise_email
from control.sessions import service, store
from control.sessions.lifecycle import SessionEvent, SessionState
from control.usage.summary import summarise
from control.web.endpoint import ADMINS, ANY_MEMBER, endpoint
from control.web.principal import current_principal
from core.signals import LIVE_STATES

routes = web.RouteTableDef()
STATES = [s.value for s in SessionState]
PAGE = 200


def _filter(request: web.Request) -> tuple[store.SessionFilter, dict[str, str]]:
    query = request.query
    state = query.get("state", "")
    try:
        email = normalise_email(query["candidate"]) if query.get("candidate") else None
    except ValueError:
        email = None
    since, until = day_range(query)
    found = store.SessionFilter(
        states=(state,) if state in STATES else (),
        candidate_email=email,
        since=since,
        until=until,
    )
    shown = {k: query.get(k, "") for k in ("state", "candidate", "since", "until")}
    return found, shown


@routes.get("/console/sessions")
@endpoint("The sessions page", access=ANY_MEMBER, tag="console")
async def sessions_page(request: web.Request) -> web.Response:
    found, shown = _filter(request)
    async with request.app[appkeys.engine].connect() as conn:
        rows = await store.list_sessions(
            conn, current_principal(request).tenant_id, found, limit=PAGE
        )
    return render(request, "sessions.html", {"rows": rows, "states": STATES, "shown": shown})


async def _session_view(request: web.Request) -> dict[str, Any]:
    """What the session page shows, built as the session report is (control/evidence):
    calls with tokens by kind, cost and retries, totals, the digest chain and its seal."""
    session_id = request.match_info["session_id"]
    found = await evidence.gather(
        request.app[appkeys.engine], current_principal(request).tenant_id, session_id
    )
    report = build_report(
        found.session, found.records, found.events, found.chain, request.app[appkeys.prices]
    )
    # A limit counts what the proxy enforces it on: the records' own token columns.
    summary = summarise(found.records)
    return {
        "session": found.session,
        "used": {"calls": summary["calls"], "output_tokens": summary["tokens"]["output_tokens"]},
        "live": found.session.state.value in LIVE_STATES,
        "online": await request.app[appkeys.signals].proxy_online(session_id),
        "report": report,
        # usage_chart escapes every value it writes (control/evidence/html.py).
        "chart": Markup(usage_chart(report["calls"])),  # noqa: S704
        "events": [e for e in found.events if e.action.startswith(("key:", "session:"))],
    }


@routes.get("/console/sessions/{session_id}")
@endpoint("A session's page", access=ANY_MEMBER, tag="console")
async def session_page(request: web.Request) -> web.Response:
    return render(request, "session.html", {**await _session_view(request), "grader": None})


@routes.get("/console/sessions/{session_id}/calls")
@endpoint("A session's calls table (the session page polls it)", access=ANY_MEMBER, tag="console")
async def calls_fragment(request: web.Request) -> web.Response:
    return render(request, "session_calls.html", await _session_view(request))


@routes.get("/console/sessions/{session_id}/end")
@endpoint("Confirm ending a session", access=ADMINS, tag="console")
async def confirm_end(request: web.Request) -> web.Response:
    return render(request, "session_end.html", await _session_view(request))


@routes.post("/console/sessions/{session_id}/end")
@endpoint("End a session from the console", access=ADMINS, tag="console")
async def end(request: web.Request) -> web.Response:
    session_id = request.match_info["session_id"]
    await service.transition(
        request.app[appkeys.engine],
        request.app[appkeys.signals],
        request_actor(request),
        tenant_id=current_principal(request).tenant_id,
        session_id=session_id,
        event=SessionEvent.END,
    )
    return redirect(f"/console/sessions/{session_id}?notice=session_ended")


@routes.post("/console/sessions/{session_id}/grader-token")
@endpoint("Issue a grader token from the console (shown once)", access=ADMINS, tag="console")
async def grader_token(request: web.Request) -> web.Response:
    token = await service.issue_grader_token(
        request.app[appkeys.engine],
        request.app[appkeys.signals],
        request_actor(request),
        tenant_id=current_principal(request).tenant_id,
        session_id=request.match_info["session_id"],
    )
    # Shown on this response only: the session keeps only its hash.
    return render(request, "session.html", {**await _session_view(request), "grader": token})


@routes.post("/console/sessions/{session_id}/report")
@endpoint("Open the session's HTML report (a one-hour link)", access=ANY_MEMBER, tag="console")
async def report(request: web.Request) -> web.Response:
    session_id = request.match_info["session_id"]
    token, _ = await evidence.create_link(
        request.app[appkeys.engine],
        request_actor(request),
        tenant_id=current_principal(request).tenant_id,
        session_id=session_id,
        now=dt.datetime.now(dt.UTC),
    )
    return redirect(f"/sessions/{session_id}?access={token}")
