"""/v1/sessions: issue, read, move through the lifecycle; the candidate's submit."""

from __future__ import annotations

from aiohttp import web

from control import appkeys
from control.audit.actions import ActorType
from control.audit.actors import actor_for, request_actor
from control.sessions import service, store
from control.sessions.lifecycle import SessionEvent
from control.sessions.schemas import (
    BootstrapTokenOut,
    Limits,
    NewSessionOut,
    SessionCreate,
    SessionList,
    SessionListItem,
    SessionListQuery,
    SessionOut,
)
from control.sessions.store import SessionRecord
from control.web.context import parse_json, parse_query
from control.web.endpoint import ADMINS, ANY_MEMBER, PUBLIC, Auth, endpoint
from control.web.errors import ApiError, not_found
from control.web.principal import bearer_token, current_principal
from core.tokens import TokenKind, token_kind

routes = web.RouteTableDef()


def _out(session: SessionRecord, proxy_online: bool | None = None) -> SessionOut:
    return SessionOut(
        id=session.id,
        state=session.state.value,
        candidate_id=session.candidate_id,
        api_key_id=session.api_key_id,
        deadline_at=session.deadline_at,
        limits=Limits(
            max_requests=session.max_requests,
            max_output_tokens=session.max_output_tokens,
            allowed_models=session.allowed_models,
            allowed_betas=session.allowed_betas,
            allowed_server_tools=session.allowed_server_tools,
        ),
        created_at=session.created_at,
        updated_at=session.updated_at,
        ended_at=session.ended_at,
        proxy_online=proxy_online,
    )


@routes.post("/v1/sessions")
@endpoint(
    "Issue a session for a candidate: a sandbox token and a proxy bootstrap token, once",
    access=ADMINS,
    body=SessionCreate,
    response=NewSessionOut,
    status=201,
)
async def create_session(request: web.Request) -> web.Response:
    body = await parse_json(request, SessionCreate)
    created = await service.create_session(
        request.app[appkeys.engine],
        request.app[appkeys.signals],
        request_actor(request),
        tenant_id=current_principal(request).tenant_id,
        request=body,
    )
    assert created.bootstrap_token is not None  # a member's session comes with one
    out = NewSessionOut(
        **_out(created.session).model_dump(),
        sandbox_token=created.sandbox_token,
        bootstrap_token=created.bootstrap_token,
        grader_token=created.grader_token,
    )
    return web.json_response(out.model_dump(mode="json"), status=201)


@routes.get("/v1/sessions")
@endpoint(
    "List the tenant's sessions, newest first, with filters",
    access=ANY_MEMBER,
    query=SessionListQuery,
    response=SessionList,
)
async def list_sessions(request: web.Request) -> web.Response:
    query = parse_query(request, SessionListQuery)
    found = store.SessionFilter(
        states=tuple(query.state.split(",")) if query.state else (),
        candidate_email=query.candidate,
        since=query.since,
        until=query.until,
    )
    async with request.app[appkeys.engine].connect() as conn:
        rows = await store.list_sessions(
            conn, current_principal(request).tenant_id, found, limit=query.limit
        )
    items = [
        SessionListItem(**_out(session).model_dump(), candidate_email=email)
        for session, email in rows
    ]
    return web.json_response(SessionList(sessions=items).model_dump(mode="json"))


@routes.get("/v1/sessions/{session_id}")
@endpoint("Show a session", access=ANY_MEMBER, response=SessionOut)
async def get_session(request: web.Request) -> web.Response:
    session_id = request.match_info["session_id"]
    async with request.app[appkeys.engine].connect() as conn:
        session = await store.get_session(
            conn, session_id, tenant_id=current_principal(request).tenant_id
        )
    if session is None:
        raise not_found("session")
    online = await request.app[appkeys.signals].proxy_online(session_id)
    return web.json_response(_out(session, online).model_dump(mode="json"))


async def _transition(request: web.Request, event: SessionEvent) -> web.Response:
    session = await service.transition(
        request.app[appkeys.engine],
        request.app[appkeys.signals],
        request_actor(request),
        tenant_id=current_principal(request).tenant_id,
        session_id=request.match_info["session_id"],
        event=event,
    )
    return web.json_response(_out(session).model_dump(mode="json"))


@routes.post("/v1/sessions/{session_id}/end")
@endpoint("End a session: its proxy clears the key and exits", access=ADMINS, response=SessionOut)
async def end_session(request: web.Request) -> web.Response:
    return await _transition(request, SessionEvent.END)


@routes.post("/v1/sessions/{session_id}/grading-complete")
@endpoint(
    "Mark grading of a submitted session complete: its proxy clears the key and exits "
    "(409 from any other state)",
    access=ADMINS,
    response=SessionOut,
)
async def grading_complete(request: web.Request) -> web.Response:
    return await _transition(request, SessionEvent.GRADING_COMPLETE)


@routes.post("/v1/sessions/{session_id}/grader-token")
@endpoint(
    "Issue a new grader token (shown once); the previous one stops working",
    access=ADMINS,
)
async def grader_token(request: web.Request) -> web.Response:
    token = await service.issue_grader_token(
        request.app[appkeys.engine],
        request.app[appkeys.signals],
        request_actor(request),
        tenant_id=current_principal(request).tenant_id,
        session_id=request.match_info["session_id"],
    )
    return web.json_response(
        {"session_id": request.match_info["session_id"], "grader_token": token}
    )


def _sandbox_token(request: web.Request) -> str:
    token = bearer_token(request)
    if token is None or token_kind(token) is not TokenKind.SESSION:
        raise ApiError(401, "authentication_error", "send the mxs_ session token as a Bearer token")
    return token


@routes.post("/v1/sessions/{session_id}/submit")
@endpoint(
    "The candidate submits: their token stops working, the grader token works on",
    access=PUBLIC,
    auth=Auth.SANDBOX,
    response=SessionOut,
)
async def submit(request: web.Request) -> web.Response:
    engine = request.app[appkeys.engine]
    session = await service.authenticate_sandbox(
        engine, request.match_info["session_id"], _sandbox_token(request)
    )
    updated = await service.transition(
        engine,
        request.app[appkeys.signals],
        actor_for(request, ActorType.CANDIDATE, session.candidate_id),
        tenant_id=session.tenant_id,
        session_id=session.id,
        event=SessionEvent.SUBMIT,
    )
    return web.json_response(_out(updated).model_dump(mode="json"))


@routes.post("/v1/sessions/{session_id}/bootstrap-token")
@endpoint(
    "A fresh single-use bootstrap token for the session's next proxy (shown once): for the "
    "platform that runs the sandbox, to start it or to reconnect it; never for the candidate",
    access=ADMINS,
    response=BootstrapTokenOut,
)
async def bootstrap_token(request: web.Request) -> web.Response:
    session_id = request.match_info["session_id"]
    token = await service.issue_bootstrap_token(
        request.app[appkeys.engine],
        request_actor(request),
        tenant_id=current_principal(request).tenant_id,
        session_id=session_id,
    )
    out = BootstrapTokenOut(session_id=session_id, bootstrap_token=token)
    return web.json_response(out.model_dump(mode="json"))
