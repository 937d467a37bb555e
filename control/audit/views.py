"""GET /v1/audit: the tenant's own audit events, newest first, cursor-paginated."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from control import appkeys
from control.audit import store
from control.audit.actions import AuditAction
from control.audit.chain import GENESIS, Head, chain_of
from control.audit.verification import export_chain
from control.web.context import parse_query, require_timezone
from control.web.endpoint import ADMINS, endpoint
from control.web.principal import current_principal

routes = web.RouteTableDef()


class AuditQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(50, ge=1, le=200, description="page size")
    cursor: str | None = Field(None, description="next_cursor of the previous page")
    action: str | None = Field(None, description="comma-separated actions, e.g. key:upload")
    since: dt.datetime | None = Field(None, description="events at or after (ISO 8601)")
    until: dt.datetime | None = Field(None, description="events before (ISO 8601)")
    access: Literal["exclude", "include", "only"] = Field(
        "exclude",
        description="access rows (api:read, api:write: one per member or operator request): "
        "left out by default, `include` adds them, `only` shows nothing else",
    )

    @field_validator("cursor")
    @classmethod
    def _cursor_is_an_id(cls, value: str | None) -> str | None:
        # ASCII digits only ("²".isdigit() is True), and within the id column's range.
        if value is not None and not (
            value.isascii() and value.isdigit() and len(value) <= 19 and int(value) < 2**63
        ):
            raise ValueError("not a cursor returned by this API")
        return value

    @field_validator("action")
    @classmethod
    def _known_actions(cls, value: str | None) -> str | None:
        if value is None:
            return None
        known = {a.value for a in AuditAction}
        unknown = [a for a in value.split(",") if a not in known]
        if unknown:
            raise ValueError(f"unknown action(s); known: {', '.join(sorted(known))}")
        return value

    _aware = field_validator("since", "until")(require_timezone)


class AuditEventOut(BaseModel):
    id: int
    occurred_at: dt.datetime
    actor_type: str
    actor_id: str | None
    action: str
    outcome: str
    target_type: str | None
    target_id: str | None
    session_id: str | None
    candidate_id: str | None
    ip: str | None
    user_agent: str | None
    request_id: str | None
    details: dict[str, Any]


class AuditPage(BaseModel):
    events: list[AuditEventOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next (older) page")


@routes.get("/v1/audit")
@endpoint("List the tenant's audit events", access=ADMINS, query=AuditQuery, response=AuditPage)
async def list_audit(request: web.Request) -> web.Response:
    principal = current_principal(request)
    query = parse_query(request, AuditQuery)
    async with request.app[appkeys.engine].connect() as conn:
        events = await store.list_events(
            conn,
            principal.tenant_id,
            limit=query.limit,
            before_id=int(query.cursor) if query.cursor else None,
            actions=query.action.split(",") if query.action else (),
            since=query.since,
            until=query.until,
            access=query.access,
        )
    page = AuditPage(
        events=[AuditEventOut.model_validate(e, from_attributes=True) for e in events],
        next_cursor=str(events[-1].id) if len(events) == query.limit else None,
    )
    return web.json_response(page.model_dump(mode="json"))


class ChainHeadOut(BaseModel):
    chain: str = Field(description="the tenant's chain (its id)")
    seq: int = Field(description="the newest row's place in the chain (0: no rows yet)")
    hash: str = Field(description="the newest row's row_hash: keep it to verify later")
    base_seq: int = Field(description="rows up to here were archived")
    base_hash: str = Field(description="the last archived row's hash")
    as_of: dt.datetime


@routes.get("/v1/audit/head")
@endpoint(
    "The head of the tenant's audit hash chain: keep it, and check later exports against it",
    access=ADMINS,
    response=ChainHeadOut,
)
async def audit_head(request: web.Request) -> web.Response:
    principal = current_principal(request)
    async with request.app[appkeys.engine].connect() as conn:
        heads = await store.chain_heads(conn, chain_of(principal.tenant_id))
    head = heads[0] if heads else Head(chain_of(principal.tenant_id), 0, GENESIS)
    out = ChainHeadOut(
        chain=head.chain,
        seq=head.seq,
        hash=head.hash,
        base_seq=head.base_seq,
        base_hash=head.base_hash,
        as_of=dt.datetime.now(dt.UTC),
    )
    return web.json_response(out.model_dump(mode="json"))


@routes.get("/v1/audit/export")
@endpoint(
    "The tenant's audit chain as JSON lines (a head line, then every row's hashed values), "
    "for `metrux control audit verify-export`",
    access=ADMINS,
)
async def audit_export(request: web.Request) -> web.StreamResponse:
    principal = current_principal(request)
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/x-ndjson",
            "Content-Disposition": 'attachment; filename="metrux-audit.jsonl"',
        }
    )
    await response.prepare(request)
    lines = export_chain(request.app[appkeys.engine], principal.tenant_id)
    async for line in lines:
        await response.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")
    await response.write_eof()
    return response
