"""/v1/auth/me: a candidate's own profile, data export and deletion request."""

from __future__ import annotations

import datetime as dt

from aiohttp import web
from pydantic import BaseModel, Field

from control import appkeys
from control.audit.actions import ActorType
from control.audit.actors import actor_for
from control.candidates import service
from control.candidates.principal import current_candidate
from control.web.endpoint import PUBLIC, Auth, endpoint

routes = web.RouteTableDef()


class CandidateOut(BaseModel):
    id: str
    email: str
    created_at: dt.datetime
    last_active_at: dt.datetime | None = Field(description="last sign-in or invite")
    deletion_notice_at: dt.datetime | None = Field(
        description="set when an inactivity notice was sent; signing in clears it"
    )


class DeletionRequestOut(BaseModel):
    id: str
    requested_at: dt.datetime
    due_at: dt.datetime = Field(description="the data is erased by then (30 days at most)")
    completed_at: dt.datetime | None


@routes.get("/v1/auth/me")
@endpoint(
    "The signed-in candidate (Bearer mxc_…); signing in cancels a pending deletion notice",
    access=PUBLIC,
    auth=Auth.CANDIDATE,
    response=CandidateOut,
)
async def me(request: web.Request) -> web.Response:
    candidate = current_candidate(request)
    return web.json_response(
        CandidateOut.model_validate(candidate, from_attributes=True).model_dump(mode="json")
    )


@routes.get("/v1/auth/me/export")
@endpoint(
    "Everything held about the candidate, as JSON: profile, invites, sessions, usage "
    "records, audit events about them and the key unwraps of their sessions",
    access=PUBLIC,
    auth=Auth.CANDIDATE,
)
async def export(request: web.Request) -> web.Response:
    data = await service.export(request.app[appkeys.engine], current_candidate(request))
    return web.json_response(
        data,
        dumps=service.export_json,
        headers={"Content-Disposition": 'attachment; filename="metrux-export.json"'},
    )


@routes.post("/v1/auth/me/delete-request")
@endpoint(
    "Ask for deletion: personal data is erased within 30 days (a repeat returns the open request)",
    access=PUBLIC,
    auth=Auth.CANDIDATE,
    response=DeletionRequestOut,
    status=202,
)
async def delete_request(request: web.Request) -> web.Response:
    candidate = current_candidate(request)
    out = await service.request_deletion(
        request.app[appkeys.engine],
        actor_for(request, ActorType.CANDIDATE, candidate.id),
        candidate,
        now=dt.datetime.now(dt.UTC),
    )
    return web.json_response(DeletionRequestOut(**out).model_dump(mode="json"), status=202)
