"""/v1/keys: upload, list, show, check, make default and revoke the tenant's Anthropic keys."""

from __future__ import annotations

from aiohttp import web

from control import appkeys
from control.audit.actors import request_actor
from control.keys import service, store
from control.keys.schemas import KeyList, KeyOut, KeyUpload
from control.keys.store import KeyUsage
from control.web.context import decode_body, parse_json_text, read_body_wiping_chunks
from control.web.endpoint import ADMINS, ANY_MEMBER, endpoint
from control.web.errors import not_found
from control.web.principal import current_principal
from core.wipe import wipe_ascii_str

routes = web.RouteTableDef()
MAX_UPLOAD_BYTES = 4096  # an API key, a name and a flag


def _out(record: store.KeyRecord, usage: KeyUsage | None = None) -> dict[str, object]:
    usage = usage or KeyUsage()
    out = KeyOut.model_validate(
        {
            **{name: getattr(record, name) for name in store.KeyRecord.__slots__},
            "live_sessions": usage.live_sessions,
            "last_used_at": usage.last_used_at,
        }
    )
    return out.model_dump(mode="json")


async def _with_usage(request: web.Request, record: store.KeyRecord) -> web.Response:
    async with request.app[appkeys.engine].connect() as conn:
        usage = await store.usage_by_key(conn, record.tenant_id)
    return web.json_response(_out(record, usage.get(record.id)))


@routes.post("/v1/keys")
@endpoint(
    "Upload an Anthropic API key: checked with Anthropic, stored wrapped (only the last "
    "four are shown); a key Anthropic refuses is not stored (422)",
    access=ADMINS,
    body=KeyUpload,
    response=KeyOut,
    status=201,
)
async def upload_key(request: web.Request) -> web.Response:
    # The body holds the key: every copy this handler makes is zeroed when it is done
    # (control/web/received.py zeroes the raw socket reads).
    raw = await read_body_wiping_chunks(request, MAX_UPLOAD_BYTES)
    text, parsed = "", None
    body: KeyUpload | None = None
    try:
        text = decode_body(raw)
        parsed, body = parse_json_text(text, KeyUpload)
        record = await service.upload_key(
            request.app[appkeys.engine],
            request.app[appkeys.kek],
            request.app[appkeys.key_checker],
            request_actor(request),
            tenant_id=current_principal(request).tenant_id,
            api_key=body.api_key,
            name=body.name,
            make_default=body.make_default,
        )
    finally:
        found = parsed.get("api_key") if isinstance(parsed, dict) else None
        for value in (text, found, body.api_key if body is not None else None):
            if isinstance(value, str):
                wipe_ascii_str(value)
        raw[:] = bytes(len(raw))
    return web.json_response(_out(record), status=201)


@routes.get("/v1/keys")
@endpoint(
    "List the tenant's keys, revoked ones included, with status and use",
    access=ANY_MEMBER,
    response=KeyList,
)
async def list_keys(request: web.Request) -> web.Response:
    tenant_id = current_principal(request).tenant_id
    async with request.app[appkeys.engine].connect() as conn:
        records = await store.list_keys(conn, tenant_id)
        usage = await store.usage_by_key(conn, tenant_id)
    return web.json_response({"keys": [_out(r, usage.get(r.id)) for r in records]})


@routes.get("/v1/keys/{key_id}")
@endpoint("Show one key", access=ANY_MEMBER, response=KeyOut)
async def get_key(request: web.Request) -> web.Response:
    async with request.app[appkeys.engine].connect() as conn:
        record = await store.get_key(
            conn, current_principal(request).tenant_id, request.match_info["key_id"]
        )
    if record is None:
        raise not_found("key")
    return await _with_usage(request, record)


@routes.post("/v1/keys/{key_id}/default")
@endpoint(
    "Make a key the default: new sessions that name no key use it; live sessions keep theirs",
    access=ADMINS,
    response=KeyOut,
)
async def make_default(request: web.Request) -> web.Response:
    record = await service.make_default(
        request.app[appkeys.engine],
        request_actor(request),
        tenant_id=current_principal(request).tenant_id,
        key_id=request.match_info["key_id"],
    )
    return await _with_usage(request, record)


@routes.post("/v1/keys/{key_id}/check")
@endpoint(
    "Check a key with Anthropic now (an invalid key that works again becomes valid)",
    access=ADMINS,
    response=KeyOut,
)
async def check_key(request: web.Request) -> web.Response:
    record = await request.app[appkeys.key_monitor].check_now(
        request_actor(request),
        tenant_id=current_principal(request).tenant_id,
        key_id=request.match_info["key_id"],
    )
    return await _with_usage(request, record)


@routes.delete("/v1/keys/{key_id}")
@endpoint(
    "Revoke a key: its blob is destroyed and live sessions using it are revoked",
    access=ADMINS,
    response=KeyOut,
)
async def revoke_key(request: web.Request) -> web.Response:
    record = await service.revoke_key(
        request.app[appkeys.engine],
        request.app[appkeys.key_revocation],
        request_actor(request),
        tenant_id=current_principal(request).tenant_id,
        key_id=request.match_info["key_id"],
    )
    return await _with_usage(request, record)
