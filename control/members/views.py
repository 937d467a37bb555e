"""/v1/members: owners and admins manage who may use the tenant's account."""

from __future__ import annotations

import dataclasses

from aiohttp import web

from control import appkeys
from control.audit.actors import request_actor
from control.members import service, store
from control.members.schemas import (
    MemberCreate,
    MemberList,
    MemberOut,
    MemberRoleChange,
    NewMemberOut,
)
from control.web.context import parse_json
from control.web.endpoint import ADMINS, endpoint
from control.web.principal import current_principal

routes = web.RouteTableDef()


def _out(record: store.MemberRecord) -> dict[str, object]:
    return MemberOut.model_validate(record, from_attributes=True).model_dump(mode="json")


@routes.post("/v1/members")
@endpoint(
    "Add a member; the response carries their API token, once",
    access=ADMINS,
    body=MemberCreate,
    response=NewMemberOut,
    status=201,
)
async def create_member(request: web.Request) -> web.Response:
    body = await parse_json(request, MemberCreate)
    principal = current_principal(request)
    created = await service.create_member(
        request.app[appkeys.engine],
        request_actor(request),
        principal.role,
        tenant_id=principal.tenant_id,
        email=body.email,
        role=body.role,
    )
    out = NewMemberOut(**dataclasses.asdict(created.member), token=created.token)
    return web.json_response(out.model_dump(mode="json"), status=201)


@routes.get("/v1/members")
@endpoint("List the tenant's members", access=ADMINS, response=MemberList)
async def list_members(request: web.Request) -> web.Response:
    async with request.app[appkeys.engine].connect() as conn:
        records = await store.list_members(conn, current_principal(request).tenant_id)
    return web.json_response({"members": [_out(r) for r in records]})


@routes.delete("/v1/members/{member_id}")
@endpoint("Revoke a member and their API token", access=ADMINS, response=MemberOut)
async def revoke_member(request: web.Request) -> web.Response:
    principal = current_principal(request)
    record = await service.revoke_member(
        request.app[appkeys.engine],
        request_actor(request),
        principal.role,
        tenant_id=principal.tenant_id,
        member_id=request.match_info["member_id"],
    )
    return web.json_response(_out(record))


@routes.patch("/v1/members/{member_id}")
@endpoint(
    "Change a member's role (not above your own, not a member above you, not the last owner)",
    access=ADMINS,
    body=MemberRoleChange,
    response=MemberOut,
)
async def change_role(request: web.Request) -> web.Response:
    principal = current_principal(request)
    # The member first (404), whatever the body holds.
    await service.require_member(
        request.app[appkeys.engine], principal.tenant_id, request.match_info["member_id"]
    )
    body = await parse_json(request, MemberRoleChange)
    record = await service.change_role(
        request.app[appkeys.engine],
        request_actor(request),
        principal.role,
        tenant_id=principal.tenant_id,
        member_id=request.match_info["member_id"],
        role=body.role,
    )
    return web.json_response(_out(record))
