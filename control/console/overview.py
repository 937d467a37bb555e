"""The overview page: the default key's health, and where to go next."""

from __future__ import annotations

from aiohttp import web

from control import appkeys
from control.console.page import render
from control.keys import store as key_store
from control.web.endpoint import ANY_MEMBER, PUBLIC, Auth, endpoint
from control.web.principal import current_principal

routes = web.RouteTableDef()


@routes.get("/console/")
@endpoint("The console's overview page", access=ANY_MEMBER, tag="console")
async def overview(request: web.Request) -> web.Response:
    tenant_id = current_principal(request).tenant_id
    async with request.app[appkeys.engine].connect() as conn:
        keys = await key_store.list_keys(conn, tenant_id)
        usage = await key_store.usage_by_key(conn, tenant_id)
    default = next((k for k in keys if k.is_default and k.revoked_at is None), None)
    live = sum(u.live_sessions for u in usage.values())
    return render(
        request,
        "overview.html",
        {"default_key": default, "live_sessions": live, "key_count": len(keys)},
    )


@routes.get("/console")
@endpoint("The console (to its overview)", access=PUBLIC, auth=Auth.NONE, tag="console")
async def console_root(request: web.Request) -> web.Response:
    return web.Response(status=308, headers={"Location": "/console/"})
