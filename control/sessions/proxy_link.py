"""A proxy's only link to the service: its attach, its usage records and its signal stream.

Attach takes the single-use bootstrap token and the proxy's HPKE public key
(control/sessions/attach.py). The other two routes take the proxy's own credential
(`mxp_`, from its attach grant). The session
and tenant come from that credential, never from what the proxy sends. A later attach of
the same session replaces the credential, so a fenced-out proxy gets 401 here and stops.

The signal stream is Server-Sent Events. On connect, on every signal and at least every
STATE_REREAD_S, the handler re-reads the session from the database and sends its state;
so a proxy that reconnects (to this replica or another) obeys whatever it missed. A
comment line every HEARTBEAT_S keeps the connection and the "proxy online" mark alive.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import structlog
from aiohttp import web

from control import appkeys
from control.audit.actions import ActorType
from control.audit.actors import actor_for
from control.sessions import attach as attach_service
from control.sessions import service
from control.sessions.lifecycle import is_live
from control.sessions.schemas import AttachGrantOut, AttachRequest
from control.sessions.signals import CLOSING, RESYNC
from control.usage.intake import (
    MAX_BATCH_BYTES,
    MAX_RECORDS_PER_BATCH,
    enqueue,
    sort_records,
)
from control.web.context import parse_json
from control.web.endpoint import PUBLIC, Auth, endpoint
from control.web.errors import ApiError
from control.web.principal import bearer_token
from core.crypto.sealing import SealError, SealTarget, load_target
from core.signals import GRADING_STATES
from core.tokens import TokenKind, token_kind

routes = web.RouteTableDef()
HEARTBEAT_S = 5.0
FENCE_WAIT_S = 5.0
log = structlog.get_logger(__name__)
STATE_REREAD_S = 30.0


def _bearer_of(request: web.Request, kind: TokenKind, what: str) -> str:
    token = bearer_token(request)
    if token is None or token_kind(token) is not kind:
        raise ApiError(401, "authentication_error", f"send {what} as a Bearer token")
    return token


def _bootstrap_token(request: web.Request) -> str:
    return _bearer_of(request, TokenKind.BOOTSTRAP, "the mxb_ bootstrap token")


@routes.post("/internal/v1/sessions/{session_id}/attach")
@endpoint(
    "A proxy attaches with its single-use bootstrap token and its ephemeral HPKE public key, "
    "and receives its grant: the data key sealed to that key, the ciphertext, its credential",
    access=PUBLIC,
    auth=Auth.BOOTSTRAP,
    body=AttachRequest,
    response=AttachGrantOut,
    tag="internal",
)
async def attach(request: web.Request) -> web.Response:
    token = _bootstrap_token(request)
    # The token is checked before the body's faults are reported: a stranger learns nothing.
    target: SealTarget | ApiError
    try:
        body = await parse_json(request, AttachRequest)
        target = load_target(body.suite, body.public_key)
    except ApiError as exc:
        target = exc
    except SealError as exc:
        target = ApiError(422, "validation_error", f"{exc} (at body.public_key)")
    session_id = request.match_info["session_id"]
    grant = await attach_service.attach(
        request.app[appkeys.engine],
        request.app[appkeys.signals],
        request.app[appkeys.kek],
        actor_for(request, ActorType.PROXY, f"proxy:{session_id}"),
        session_id=session_id,
        bootstrap_token=token,
        seal_to=target,
    )
    # The previous proxy was fenced in that transaction and told so: give it a moment to
    # clear its key and drop its stream, so that one session never has two proxies serving.
    # A proxy cut off from the control plane clears on its own grace instead.
    epoch = grant.session.proxy_epoch
    if epoch > 1 and not await request.app[appkeys.signals].wait_offline(
        session_id, epoch - 1, FENCE_WAIT_S
    ):
        log.warning("fenced_proxy_still_online", session_id=session_id, epoch=epoch - 1)
    return web.json_response(grant.as_json())


def _credential(request: web.Request) -> str:
    return _bearer_of(request, TokenKind.PROXY, "the proxy's mxp_ credential")


async def _read_capped(request: web.Request, limit: int) -> bytes:
    """The body, refused with 413 past `limit` bytes (a batch may exceed the app's limit)."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "request_too_large", f"a batch may be at most {limit} bytes")
    body = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "request_too_large", f"a batch may be at most {limit} bytes")
    return bytes(body)


def _batch(raw: bytes) -> list[object]:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, RecursionError, ValueError):
        raise ApiError(400, "invalid_request_error", "body is not a JSON document") from None
    records = data.get("records") if isinstance(data, dict) else None
    if not isinstance(records, list):
        raise ApiError(422, "validation_error", 'send {"records": [...]}')
    if len(records) > MAX_RECORDS_PER_BATCH:
        raise ApiError(
            422, "validation_error", f"at most {MAX_RECORDS_PER_BATCH} records per batch"
        )
    return records


@routes.post("/internal/v1/sessions/{session_id}/usage")
@endpoint(
    "An attached proxy delivers usage records in a batch, idempotent by record id; each is "
    "accepted or refused on its own",
    access=PUBLIC,
    auth=Auth.PROXY,
    tag="internal",
)
async def post_usage(request: web.Request) -> web.Response:
    app = request.app
    proxy = await service.authenticate_proxy(
        app[appkeys.engine], request.match_info["session_id"], _credential(request)
    )
    session, now = proxy.session, dt.datetime.now(dt.UTC)
    if proxy.current and not proxy.may_record(now, now):
        raise ApiError(403, "permission_error", f"session is {session.state.value}")
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    items = _batch(await _read_capped(request, MAX_BATCH_BYTES))
    result = sort_records(
        items,
        session_id=session.id,
        tenant_id=session.tenant_id,
        admit=None if proxy.current else lambda started_at: proxy.may_record(started_at, now),
    )
    await enqueue(app[appkeys.redis], app[appkeys.names], result.accepted)
    metrics = app[appkeys.metrics]
    metrics.records_received.inc(len(result.accepted))
    for refusal in result.refused:
        metrics.records_refused.labels(refusal.reason).inc()
    return web.json_response(
        {
            "accepted": len(result.accepted),
            "refused": [refusal.as_json() for refusal in result.refused],
        }
    )


def proxy_view(proxy: service.AttachedProxy, signal: str | None) -> dict[str, Any]:
    """What the proxy is told about its session. Pure: no I/O. `final`: the stream ends
    after this event, and the proxy clears its key."""
    session, current = proxy.session, proxy.current
    return {
        "state": session.state.value,
        "current": current,
        "epoch": session.proxy_epoch,
        "candidate_enabled": session.state.value not in GRADING_STATES,
        "grader_token_sha256": session.grader_token_hash,
        "signal": signal if signal not in (None, RESYNC, CLOSING) else None,
        "final": not current or not is_live(session.state),
    }


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@routes.get("/internal/v1/sessions/{session_id}/signals")
@endpoint(
    "An attached proxy's signal stream (Server-Sent Events): its session's state on connect, "
    "after every change and periodically, and a heartbeat that marks the proxy online",
    access=PUBLIC,
    auth=Auth.PROXY,
    tag="internal",
)
async def signals(request: web.Request) -> web.StreamResponse:
    app = request.app
    engine, hub, publisher = app[appkeys.engine], app[appkeys.hub], app[appkeys.signals]
    proxy = await service.authenticate_proxy(
        engine, request.match_info["session_id"], _credential(request)
    )
    session = proxy.session
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    with hub.watch(session.id) as queue:
        signal: str | None = None
        try:
            while not hub.closing:
                found = await service.reread_proxy(engine, proxy)
                if found is None:  # deleted by retention: nothing left to serve
                    await response.write(_event("state", {"state": "deleted", "final": True}))
                    break
                view = proxy_view(found, signal)
                await response.write(_event("state", view))
                if view["final"]:
                    break
                await publisher.mark_online(session.id, proxy.credential.epoch)
                signal = None
                reread_at = loop.time() + STATE_REREAD_S
                while signal is None and loop.time() < reread_at and not hub.closing:
                    try:
                        wait = min(HEARTBEAT_S, max(reread_at - loop.time(), 0))
                        signal = await asyncio.wait_for(queue.get(), wait)
                    except TimeoutError:
                        await response.write(b": ping\n\n")
                        await publisher.mark_online(session.id, proxy.credential.epoch)
        except (ConnectionResetError, ConnectionError):
            pass  # the proxy went away; it reconnects if it still runs
        finally:
            await publisher.mark_offline(session.id, proxy.credential.epoch)
    return response
