"""The members page: the list, add a member (their API token shown once), change a role,
and revoke after a confirmation, under the same rank rules as the API."""

from __future__ import annotations

from aiohttp import web

from control import appkeys
from control.audit.actors import request_actor
from control.console.page import redirect, render
from control.members import service, store
from control.members.schemas import normalise_email
from control.web.endpoint import ADMINS, ROLE_RANK, Role, endpoint
from control.web.errors import ApiError, not_found
from control.web.principal import current_principal

routes = web.RouteTableDef()


async def _page(
    request: web.Request, *, error: str | None = None, status: int = 200, **extra: object
) -> web.Response:
    principal = current_principal(request)
    async with request.app[appkeys.engine].connect() as conn:
        members = await store.list_members(conn, principal.tenant_id)
    grantable = [r.value for r in Role if ROLE_RANK[r] <= ROLE_RANK[principal.role]]
    return render(
        request,
        "members.html",
        {
            "members": members,
            "grantable": grantable,
            "my_rank": ROLE_RANK[principal.role],
            "ranks": {r.value: ROLE_RANK[r] for r in Role},
            "error": error,
            "new_member": None,
            "new_token": None,
            **extra,
        },
        status=status,
    )


def _role(value: object) -> Role | None:
    try:
        return Role(str(value))
    except ValueError:
        return None


@routes.get("/console/members")
@endpoint("The members page", access=ADMINS, tag="console")
async def members_page(request: web.Request) -> web.Response:
    return await _page(request)


@routes.post("/console/members")
@endpoint("Add a member from the console", access=ADMINS, tag="console")
async def add(request: web.Request) -> web.Response:
    form = await request.post()
    role = _role(form.get("role"))
    try:
        email = normalise_email(str(form.get("email", "")))
    except ValueError:
        return await _page(request, error="Give the new member's email address.", status=422)
    if role is None:
        return await _page(request, error="Choose a role.", status=422)
    principal = current_principal(request)
    try:
        created = await service.create_member(
            request.app[appkeys.engine],
            request_actor(request),
            principal.role,
            tenant_id=principal.tenant_id,
            email=email,
            role=role,
        )
    except ApiError as exc:
        if exc.status >= 500:
            raise
        return await _page(request, error=exc.message, status=exc.status)
    # The token is shown on this response only: it is stored as a hash.
    return await _page(request, status=201, new_member=created.member, new_token=created.token)


@routes.post("/console/members/{member_id}/role")
@endpoint("Change a member's role from the console", access=ADMINS, tag="console")
async def change_role(request: web.Request) -> web.Response:
    principal = current_principal(request)
    # The member first (404), whatever the body holds.
    await service.require_member(
        request.app[appkeys.engine], principal.tenant_id, request.match_info["member_id"]
    )
    form = await request.post()
    role = _role(form.get("role"))
    if role is None:
        return await _page(request, error="Choose a role.", status=422)
    try:
        await service.change_role(
            request.app[appkeys.engine],
            request_actor(request),
            principal.role,
            tenant_id=principal.tenant_id,
            member_id=request.match_info["member_id"],
            role=role,
        )
    except ApiError as exc:
        if exc.status in (403, 409):
            return await _page(request, error=exc.message, status=exc.status)
        raise
    return redirect("/console/members?notice=member_role")


@routes.get("/console/members/{member_id}/revoke")
@endpoint("Confirm revoking a member", access=ADMINS, tag="console")
async def confirm_revoke(request: web.Request) -> web.Response:
    async with request.app[appkeys.engine].connect() as conn:
        member = await store.get_member(
            conn, current_principal(request).tenant_id, request.match_info["member_id"]
        )
    if member is None or member.revoked_at is not None:
        raise not_found("member")
    return render(request, "member_revoke.html", {"member": member})


@routes.post("/console/members/{member_id}/revoke")
@endpoint("Revoke a member from the console", access=ADMINS, tag="console")
async def revoke(request: web.Request) -> web.Response:
    principal = current_principal(request)
    try:
        await service.revoke_member(
            request.app[appkeys.engine],
            request_actor(request),
            principal.role,
            tenant_id=principal.tenant_id,
            member_id=request.match_info["member_id"],
        )
    except ApiError as exc:
        if exc.status in (403, 409):
            return await _page(request, error=exc.message, status=exc.status)
        raise
    return redirect("/console/members?notice=member_revoked")
