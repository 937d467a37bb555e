"""The audit page: the tenant's log with filters (action, actor, time, access rows), the
platform operators' reads marked, and the current filter as CSV."""

from __future__ import annotations

import csv
import io
from typing import Any

from aiohttp import web

from control import appkeys
from control.audit import store
from control.audit.actions import ActorType, AuditAction
from control.audit.store import AuditEvent
from control.console.page import day_range, render
from control.web.endpoint import ADMINS, endpoint
from control.web.principal import current_principal

routes = web.RouteTableDef()
PAGE = 100
CSV_LIMIT = 10_000
ACTIONS = sorted(a.value for a in AuditAction)
ACTORS = sorted(a.value for a in ActorType)


def _filters(request: web.Request) -> dict[str, Any]:
    """The filter in the query, each value checked against what it can be (an unknown
    value is dropped, never echoed)."""
    query = request.query
    since, until = day_range(query)
    cursor = query.get("cursor", "")
    access = query.get("access", "")
    return {
        "action": query.get("action") if query.get("action") in ACTIONS else "",
        "actor": query.get("actor") if query.get("actor") in ACTORS else "",
        "since": since,
        "until": until,
        "access": access if access in ("include", "only") else "exclude",
        "cursor": int(cursor)
        if cursor.isascii() and cursor.isdigit() and len(cursor) < 19
        else None,
    }


async def _events(request: web.Request, filters: dict[str, Any], limit: int) -> list[AuditEvent]:
    async with request.app[appkeys.engine].connect() as conn:
        return await store.list_events(
            conn,
            current_principal(request).tenant_id,
            limit=limit,
            before_id=filters["cursor"],
            actions=[filters["action"]] if filters["action"] else (),
            actor_types=[filters["actor"]] if filters["actor"] else (),
            since=filters["since"],
            until=filters["until"],
            access=filters["access"],
        )


@routes.get("/console/audit")
@endpoint("The audit page", access=ADMINS, tag="console")
async def audit_page(request: web.Request) -> web.Response:
    filters = _filters(request)
    events = await _events(request, filters, PAGE)
    shown = {k: request.query.get(k, "") for k in ("action", "actor", "since", "until", "access")}
    return render(
        request,
        "audit.html",
        {
            "events": events,
            "actions": ACTIONS,
            "actors": ACTORS,
            "shown": shown,
            "next_cursor": events[-1].id if len(events) == PAGE else None,
            "query": request.query_string,
        },
    )


CSV_COLUMNS = ("id", "occurred_at", "actor_type", "actor_id", "operator_read", "action",
               "outcome", "target_type", "target_id", "session_id", "ip", "user_agent",
               "details")  # fmt: skip


@routes.get("/console/audit.csv")
@endpoint("The audit page's current filter as CSV", access=ADMINS, tag="console")
async def audit_csv(request: web.Request) -> web.Response:
    filters = {**_filters(request), "cursor": None}
    events = await _events(request, filters, CSV_LIMIT)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for e in events:
        row = [e.id, e.occurred_at.isoformat(), e.actor_type, e.actor_id or "",
               "yes" if e.actor_type == ActorType.OPERATOR.value else "", e.action, e.outcome,
               e.target_type or "", e.target_id or "", e.session_id or "", e.ip or "",
               e.user_agent or "", _details(e)]  # fmt: skip
        writer.writerow([_cell(value) for value in row])
    return web.Response(
        text=out.getvalue(),
        content_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="metrux-audit.csv"'},
    )


def _details(event: AuditEvent) -> str:
    return "; ".join(f"{k}={v}" for k, v in sorted(event.details.items()))


def _cell(value: object) -> object:
    """A cell a spreadsheet will not run: text that starts like a formula (a user agent,
    a name) gets a leading apostrophe."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
