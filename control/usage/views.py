"""/v1/sessions/{id}/usage: a session's usage records and their summary."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from control import appkeys
from control.usage import store
from control.usage.summary import summarise
from control.web.endpoint import ANY_MEMBER, endpoint
from control.web.errors import not_found
from control.web.principal import current_principal

routes = web.RouteTableDef()


async def _records(request: web.Request) -> list[dict[str, Any]]:
    session_id = request.match_info["session_id"]
    async with request.app[appkeys.engine].connect() as conn:
        records = await store.records_of_visible_session(
            conn, session_id, current_principal(request).tenant_id
        )
    if records is None:
        raise not_found("session")
    return records


def _jsonable(record: dict[str, Any]) -> dict[str, Any]:
    out = dict(record)
    for field in ("started_at", "ingested_at"):
        out[field] = out[field].isoformat()
    return out


@routes.get("/v1/sessions/{session_id}/usage")
@endpoint("A session's usage records, oldest first (one per upstream call)", access=ANY_MEMBER)
async def list_usage(request: web.Request) -> web.Response:
    return web.json_response({"records": [_jsonable(r) for r in await _records(request)]})


@routes.get("/v1/sessions/{session_id}/usage/summary")
@endpoint("Calls, tokens by kind, models, errors and latency for a session", access=ANY_MEMBER)
async def usage_summary(request: web.Request) -> web.Response:
    return web.json_response(summarise(await _records(request)))
