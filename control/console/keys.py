"""The keys page: upload (checked with Anthropic), the list, make default, check now, and
revoke after a confirmation. A key is never echoed, not even into a form after an error."""

from __future__ import annotations

from urllib.parse import parse_qs

from aiohttp import web
from pydantic import ValidationError

from control import appkeys
from control.audit.actors import request_actor
from control.console.page import redirect, render
from control.keys import service, store
from control.keys.schemas import KeyUpload
from control.web.context import decode_body, read_body_wiping_chunks
from control.web.endpoint import ADMINS, ANY_MEMBER, endpoint
from control.web.errors import ApiError, not_found, validation_error
from control.web.principal import current_principal
from core.wipe import wipe_ascii_str

routes = web.RouteTableDef()
MAX_FORM_BYTES = 4096


async def _page(
    request: web.Request, *, error: str | None = None, status: int = 200
) -> web.Response:
    tenant_id = current_principal(request).tenant_id
    async with request.app[appkeys.engine].connect() as conn:
        keys = await store.list_keys(conn, tenant_id)
        usage = await store.usage_by_key(conn, tenant_id)
    return render(
        request,
        "keys.html",
        {"keys": keys, "usage": usage, "error": error},
        status=status,
    )


@routes.get("/console/keys")
@endpoint("The keys page", access=ANY_MEMBER, tag="console")
async def keys_page(request: web.Request) -> web.Response:
    return await _page(request)


@routes.post("/console/keys")
@endpoint("Upload a key from the console", access=ADMINS, tag="console")
async def upload(request: web.Request) -> web.Response:
    # As the JSON upload: every copy of the body this handler makes is zeroed afterwards.
    raw = await read_body_wiping_chunks(
        request, MAX_FORM_BYTES, content_type="application/x-www-form-urlencoded"
    )
    text, fields, secret = "", {}, None
    try:
        text = decode_body(raw)
        fields = parse_qs(text, keep_blank_values=True, max_num_fields=10)
        secret = (fields.get("api_key") or [""])[0]
        name = (fields.get("name") or [""])[0].strip() or None
        try:
            body = KeyUpload(api_key=secret, name=name, make_default="make_default" in fields)
        except ValidationError as exc:
            problem = validation_error(exc)
            return await _page(request, error=problem.message, status=422)
        try:
            await service.upload_key(
                request.app[appkeys.engine],
                request.app[appkeys.kek],
                request.app[appkeys.key_checker],
                request_actor(request),
                tenant_id=current_principal(request).tenant_id,
                api_key=body.api_key,
                name=body.name,
                make_default=body.make_default,
            )
        except ApiError as exc:
            if exc.status >= 500:
                raise
            return await _page(request, error=exc.message, status=exc.status)
    finally:
        for value in (text, secret, *(v for values in fields.values() for v in values)):
            if isinstance(value, str):
                wipe_ascii_str(value)
        raw[:] = bytes(len(raw))
    return redirect("/console/keys?notice=key_uploaded")


@routes.post("/console/keys/{key_id}/default")
@endpoint("Make a key the default, from the console", access=ADMINS, tag="console")
async def make_default(request: web.Request) -> web.Response:
    await service.make_default(
        request.app[appkeys.engine],
        request_actor(request),
        tenant_id=current_principal(request).tenant_id,
        key_id=request.match_info["key_id"],
    )
    return redirect("/console/keys?notice=key_default")


@routes.post("/console/keys/{key_id}/check")
@endpoint("Check a key with Anthropic now, from the console", access=ADMINS, tag="console")
async def check(request: web.Request) -> web.Response:
    await request.app[appkeys.key_monitor].check_now(
        request_actor(request),
        tenant_id=current_principal(request).tenant_id,
        key_id=request.match_info["key_id"],
    )
    return redirect("/console/keys?notice=key_checked")


@routes.get("/console/keys/{key_id}/revoke")
@endpoint("Confirm revoking a key", access=ADMINS, tag="console")
async def confirm_revoke(request: web.Request) -> web.Response:
    async with request.app[appkeys.engine].connect() as conn:
        key = await store.get_key(
            conn, current_principal(request).tenant_id, request.match_info["key_id"]
        )
        usage = await store.usage_by_key(conn, current_principal(request).tenant_id)
    if key is None:
        raise not_found("key")
    return render(request, "revoke.html", {"key": key, "usage": usage.get(key.id)})


@routes.post("/console/keys/{key_id}/revoke")
@endpoint("Revoke a key, from the console", access=ADMINS, tag="console")
async def revoke(request: web.Request) -> web.Response:
    await service.revoke_key(
        request.app[appkeys.engine],
        request.app[appkeys.key_revocation],
        request_actor(request),
        tenant_id=current_principal(request).tenant_id,
        key_id=request.match_info["key_id"],
    )
    return redirect("/console/keys?notice=key_revoked")
