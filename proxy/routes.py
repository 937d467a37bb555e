"""The Anthropic API surface the clients use, and the proxy's own disconnect and
keepalive calls for the sandbox launcher.

Every call: lockout → authenticate → key still armed → rate → body → limits → forward →
settle. Anything else is a 404 in Anthropic's error shape.
"""

from __future__ import annotations

from aiohttp import web

from core.usage import UsageRecord
from proxy import appkeys
from proxy.auth import identify
from proxy.errors import ProxyError, not_found, unauthorized
from proxy.forward import forward
from proxy.keyring import KeyCleared
from proxy.limits import too_many
from proxy.meter.digest import RequestFacts, request_facts
from proxy.meter.recorder import CallRecorder

routes = web.RouteTableDef()


def _source(request: web.Request) -> str:
    return request.remote or "unknown"


def _authenticate(request: web.Request) -> str:
    """The caller's actor ("candidate" or "grader"), or a 401/429/403."""
    session = request.app[appkeys.session]
    source = _source(request)
    actor = identify(request.headers, session.info.token_sha256, session.grader_sha256)
    if actor == "candidate" and not session.candidate_enabled:
        raise ProxyError(
            403, "permission_error", "the candidate has submitted; only the grader token works now"
        )
    if actor is not None:
        return actor
    session.lockout.record_failure(source)
    locked = session.lockout.retry_after(source)
    if locked is not None:
        raise too_many("too many invalid session tokens from this address", locked)
    raise unauthorized()


def _key_cleared() -> ProxyError:
    return ProxyError(403, "permission_error", "this session has ended; its key is cleared")


def _admit(request: web.Request) -> str:
    """Checks before any body is read; returns the actor."""
    session = request.app[appkeys.session]
    actor = _authenticate(request)
    if not session.key.armed:
        raise _key_cleared()
    wait = session.rate.take()
    if wait is not None:
        raise too_many("session request rate exceeded", wait)
    return actor


def _header_key(request: web.Request) -> str:
    # Taken only once the body is in: a slow upload holds no reference to the key.
    try:
        return request.app[appkeys.session].key.header_value()
    except KeyCleared:
        raise _key_cleared() from None


def _publish(app: web.Application, record: UsageRecord) -> None:
    app[appkeys.metrics].observe(record)
    app[appkeys.publisher].publish(record)


async def _relay(request: web.Request, *, endpoint: str, generation: bool) -> web.StreamResponse:
    app = request.app
    session = app[appkeys.session]
    actor = _admit(request)
    body = await request.read() if request.can_read_body else b""
    facts = request_facts(body) if body else RequestFacts(request_sha256="")
    reservation = None
    if endpoint.startswith("/v1/messages"):
        session.budget.check_model(facts.model)
    if generation:
        reservation = session.budget.admit(facts.max_tokens)
    recorder = CallRecorder(
        session_id=session.info.session_id,
        tenant_id=session.info.tenant_id,
        actor=actor,
        method=request.method,
        endpoint=endpoint,
        facts=facts,
        bytes_in=len(body),
        publish=lambda record: _publish(app, session.link(record)),
        reserved_output_tokens=reservation.output_tokens if reservation else None,
    )
    try:
        return await forward(
            request,
            client=app[appkeys.http],
            upstream_url=app[appkeys.upstream_url],
            api_key=_header_key(request),
            allowed_betas=session.info.allowed_betas,
            body=body,
            stream=facts.stream,
            recorder=recorder,
        )
    finally:
        if reservation is not None:
            session.budget.settle(reservation, recorder.record)


@routes.post("/v1/messages")
async def messages(request: web.Request) -> web.StreamResponse:
    return await _relay(request, endpoint="/v1/messages", generation=True)


@routes.post("/v1/messages/count_tokens")
async def count_tokens(request: web.Request) -> web.StreamResponse:
    return await _relay(request, endpoint="/v1/messages/count_tokens", generation=False)


@routes.get("/v1/models")
async def list_models(request: web.Request) -> web.StreamResponse:
    return await _relay(request, endpoint="/v1/models", generation=False)


@routes.get("/v1/models/{model_id}")
async def get_model(request: web.Request) -> web.StreamResponse:
    return await _relay(request, endpoint="/v1/models/{model_id}", generation=False)


@routes.post("/_proxy/disconnect")
async def disconnect(request: web.Request) -> web.Response:
    """The sandbox side says the candidate is gone: clear the key now."""
    _authenticate(request)
    request.app[appkeys.session].clear("sandbox_disconnect")
    return web.json_response({"status": "cleared"})


@routes.post("/_proxy/keepalive")
async def keepalive(request: web.Request) -> web.Response:
    """The sandbox launcher's heartbeat (see proxy.keepalive)."""
    _authenticate(request)
    watchdog = request.app.get(appkeys.watchdog)
    if watchdog is not None:
        watchdog.beat()
    return web.json_response({"status": "ok"})


async def fallback(request: web.Request) -> web.Response:
    raise not_found(request.method, request.path)
