"""/v1/invites: customers invite candidates; candidates look up and accept by token."""

from __future__ import annotations

from aiohttp import web

from control import appkeys
from control.audit.actions import ActorType
from control.audit.actors import actor_for, request_actor
from control.invites import service
from control.invites.schemas import (
    AcceptedInvite,
    InviteCreate,
    InviteLookup,
    InviteOut,
    NewInviteOut,
)
from control.web.context import parse_json
from control.web.endpoint import ADMINS, PUBLIC, endpoint
from control.web.principal import current_principal

routes = web.RouteTableDef()


@routes.post("/v1/invites")
@endpoint(
    "Invite a candidate; the invite is emailed (or put in the outbox) and its token shown once",
    access=ADMINS,
    body=InviteCreate,
    response=NewInviteOut,
    status=201,
)
async def create_invite(request: web.Request) -> web.Response:
    body = await parse_json(request, InviteCreate)
    settings = request.app[appkeys.settings]
    created = await service.create_invite(
        request.app[appkeys.engine],
        request.app[appkeys.email],
        request_actor(request),
        tenant_id=current_principal(request).tenant_id,
        request=body,
        public_url=settings.public_url,
    )
    out = NewInviteOut(
        **created.invite,
        invite_token=created.token,
        invite_url=f"{settings.public_url}/v1/invites/{created.token}",
        email_sent=created.email_error is None,
        email_error=created.email_error,
    )
    return web.json_response(out.model_dump(mode="json"), status=201)


@routes.get("/v1/invites")
@endpoint("List the tenant's invites", access=ADMINS)
async def list_invites(request: web.Request) -> web.Response:
    rows = await service.list_invites(
        request.app[appkeys.engine], current_principal(request).tenant_id
    )
    return web.json_response({"invites": [InviteOut(**r).model_dump(mode="json") for r in rows]})


@routes.get("/v1/invites/{token}")
@endpoint(
    "Look up an invite by its token (the candidate's link)", access=PUBLIC, response=InviteLookup
)
async def lookup_invite(request: web.Request) -> web.Response:
    found = await service.lookup_invite(request.app[appkeys.engine], request.match_info["token"])
    return web.json_response(InviteLookup(**found).model_dump(mode="json"))


@routes.post("/v1/invites/{token}/accept")
@endpoint(
    "Accept an invite: issues the candidate's session and its tokens, once",
    access=PUBLIC,
    response=AcceptedInvite,
    status=201,
)
async def accept_invite(request: web.Request) -> web.Response:
    actor = actor_for(request, ActorType.CANDIDATE, None)
    accepted = await service.accept_invite(
        request.app[appkeys.engine],
        request.app[appkeys.signals],
        actor,
        token=request.match_info["token"],
    )
    created = accepted.created
    out = AcceptedInvite(
        session_id=created.session.id,
        control_url=request.app[appkeys.settings].public_url,
        sandbox_token=created.sandbox_token,
        candidate_token=accepted.candidate_token,
        deadline_at=created.session.deadline_at,
    )
    return web.json_response(out.model_dump(mode="json"), status=201)
