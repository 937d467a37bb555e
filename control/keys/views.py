"""/v1/keys: upload, list, show and revoke the tenant's Anthropic keys."""

from __future__ import annotations

from aiohttp import web

from control import appkeys
from control.keys import service, store
from control.keys.schemas import KeyList, KeyOut, KeyUpload
from control.web.auth import current_principal, request_actor
from control.web.context import parse_json
from control.web.endpoint import ADMINS, ANY_MEMBER, endpoint
from control.web.errors import not_found

routes = web.RouteTableDef()


def _out(record: store.KeyRecord) -> dict[str, object]:
    return KeyOut.model_validate(record, from_attributes=True).model_dump(mode="json")


@routes.post("/v1/keys")
@endpoint(
    "Upload an Anthropic API key (stored wrapped; only the last four are shown)",
    access=ADMINS,
    body=KeyUpload,
    response=KeyOut,
    status=201,
)
async def upload_key(request: web.Request) -> web.Response:
    body = await parse_json(request, KeyUpload)
    record = await service.upload_key(
        request.app[appkeys.engine],
        request.app[appkeys.kek],
        request_actor(request),
        tenant_id=current_principal(request).tenant_id,
        api_key=body.api_key,
        name=body.name,
    )
    return web.json_response(_out(record), status=201)


@routes.get("/v1/keys")
@endpoint("List the tenant's keys, revoked ones included", access=ANY_MEMBER, response=KeyList)
async def list_keys(request: web.Request) -> web.Response:
    async with request.app[appkeys.engine].connect() as conn:
        records = await store.list_keys(conn, current_principal(request).tenant_id)
    return web.json_response({"keys": [_out(r) for r in records]})


@routes.get("/v1/keys/{key_id}")
@endpoint("Show one key", access=ANY_MEMBER, response=KeyOut)
async def get_key(request: web.Request) -> web.Response:
    async with request.app[appkeys.engine].connect() as conn:
        record = await store.get_key(
            conn, current_principal(request).tenant_id, request.match_info["key_id"]
        )
    if record is None:
        raise not_found("key")
    return web.json_response(_out(record))


@routes.delete("/v1/keys/{key_id}")
@endpoint(
    "Revoke a key: its blob is destroyed and live sessions using it are revoked",
    access=ADMINS,
    response=KeyOut,
)
async def revoke_key(request: web.Request) -> web.Response:
    record = await service.revoke_key(
        request.app[appkeys.engine],
        request.app[appkeys.signals],
        request_actor(request),
        tenant_id=current_principal(request).tenant_id,
        key_id=request.match_info["key_id"],
    )
    return web.json_response(_out(record))
