"""Authentication and role enforcement, for every route from its declared `Endpoint`.

Members send `Authorization: Bearer mxk_…`, or (signed in through the identity provider)
the `metrux_session` cookie; a cookie-authenticated request that changes something must
carry the session's CSRF token in `X-CSRF-Token` and, if it sends an Origin, come from
the service's own origin. A session whose member's role changed since it was issued is
rotated: the old cookie dies and the response carries a new one. Candidates send
`mxc_…` on their own routes.
Platform operators send `mxo_…` with `X-Metrux-Tenant: <tenant id>` and may call any member
route that only reads (GET); each such read is written to that tenant's audit log first.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

from aiohttp import web

from control import appkeys
from control.audit import store as audit
from control.audit.access import Access, AccessLogUnavailable, route_params
from control.audit.actions import ActorType, AuditAction
from control.audit.actors import actor_for, request_actor
from control.candidates import service as candidate_service
from control.candidates.principal import candidate_key
from control.identity import store as member_sessions
from control.identity.store import IssuedSession
from control.members import store as member_store
from control.tenants import store as tenant_store
from control.web.endpoint import Auth, Endpoint, Role, endpoint_of
from control.web.errors import ApiError, Handler, not_found, unauthenticated
from control.web.principal import (
    CSRF_HEADER,
    SESSION_COOKIE,
    Principal,
    bearer_token,
    principal_key,
)
from core.tokens import TokenKind, hash_token, token_kind

rotated_key = web.RequestKey("rotated_session", IssuedSession)
OPERATOR_TENANT_HEADER = "X-Metrux-Tenant"
_READS = frozenset({"GET", "HEAD"})
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


def _unauthenticated() -> ApiError:
    return unauthenticated(
        "missing or invalid API token: send your mxk_ member token as a Bearer token"
    )


async def authenticate(request: web.Request) -> Principal:
    token = bearer_token(request)
    if token is None and request.cookies.get(SESSION_COOKIE):
        return await _authenticate_session(request, request.cookies[SESSION_COOKIE])
    kind = token_kind(token) if token is not None else None
    if kind is TokenKind.OPERATOR and token is not None:
        return await _authenticate_operator(request, token)
    if token is None or kind is not TokenKind.MEMBER:
        raise _unauthenticated()
    async with request.app[appkeys.engine].connect() as conn:
        member = await member_store.find_by_token(conn, token)
    if member is None:
        raise _unauthenticated()
    return Principal(tenant_id=member.tenant_id, member_id=member.id, role=Role(member.role))


async def _authenticate_operator(request: web.Request, token: str) -> Principal:
    """A platform operator reading one tenant's data; the read is audited in that
    tenant's log before it happens."""
    engine = request.app[appkeys.engine]
    async with engine.connect() as conn:
        operator_id = await tenant_store.find_operator_by_token(conn, token)
    if operator_id is None:
        raise _unauthenticated()
    if request.method not in _READS:
        raise ApiError(403, "permission_error", "platform operators can only read")
    tenant_id = request.headers.get(OPERATOR_TENANT_HEADER, "")
    if not tenant_id:
        raise ApiError(
            400,
            "invalid_request_error",
            f"name the tenant to read in the {OPERATOR_TENANT_HEADER} header",
        )
    async with engine.begin() as conn:
        if not await tenant_store.tenant_exists(conn, tenant_id):
            raise not_found("tenant")
        await audit.record(
            conn,
            actor_for(request, ActorType.OPERATOR, f"operator:{operator_id}"),
            AuditAction.OPERATOR_READ,
            tenant_id=tenant_id,
            details={"method": request.method, "path": request.path},
        )
    return Principal(tenant_id=tenant_id, member_id=None, role=Role.OWNER, operator_id=operator_id)


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser cross-site request (browsers send Origin on POSTs)
    own = urlsplit(request.app[appkeys.settings].public_url)
    theirs = urlsplit(origin)
    return (theirs.scheme, theirs.netloc) == (own.scheme, own.netloc)


async def _authenticate_session(request: web.Request, cookie: str) -> Principal:
    now = dt.datetime.now(dt.UTC)
    async with request.app[appkeys.engine].begin() as conn:
        live = await member_sessions.find_live(conn, cookie, now)
        if live is None:
            raise unauthenticated("your session has ended: sign in again", realm="metrux")
        if request.method not in _SAFE:
            if not _same_origin(request):
                raise ApiError(403, "permission_error", "cross-origin request refused")
            # The console's forms carry it in their action URL (a form cannot send a
            # header, and its body may hold a key that must not be parsed twice).
            presented = request.headers.get(CSRF_HEADER) or request.query.get("csrf_token")
            if not live.csrf_matches(presented):
                raise ApiError(
                    403, "permission_error", f"missing or wrong CSRF token (send {CSRF_HEADER})"
                )
        session_hash = live.token_hash
        if live.current_role != live.issued_role:
            # The member's privileges changed: this cookie is retired and a new one issued
            # (once: a concurrent request that lost the race must sign in again).
            if not await member_sessions.revoke(conn, live.token_hash, "role_changed", now):
                raise unauthenticated("your session has ended: sign in again", realm="metrux")
            rotated = await member_sessions.issue(
                conn,
                member_id=live.member_id,
                tenant_id=live.tenant_id,
                role=live.current_role,
                subject=None,
                lifetime=live.expires_at - now,
                now=now,
            )
            request[rotated_key] = rotated
            session_hash = hash_token(rotated.token)
    return Principal(
        tenant_id=live.tenant_id,
        member_id=live.member_id,
        role=Role(live.current_role),
        session_hash=session_hash,
    )


# The candidate's pages (/me) carry the candidate token in this HttpOnly, SameSite=Strict
# cookie, set when they accept an invite in the browser.
CANDIDATE_COOKIE = "metrux_candidate"


def _candidate_token(request: web.Request) -> str | None:
    token = bearer_token(request)
    page = request.path == "/me" or request.path.startswith("/me/")
    if token is None and page and CANDIDATE_COOKIE in request.cookies:
        if request.method not in _SAFE and not _same_origin(request):
            raise ApiError(403, "permission_error", "cross-origin request refused")
        return request.cookies[CANDIDATE_COOKIE]
    return token


def _route_endpoint(request: web.Request) -> Endpoint | None:
    return endpoint_of(request.match_info.handler)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.match_info.http_exception is not None:
        return await handler(request)  # no such route: the error middleware renders the 404
    meta = _route_endpoint(request)
    if meta is None:
        # Fail closed: a route nobody declared access for is nobody's.
        raise ApiError(500, "api_error", "route has no access declaration")
    if meta.auth is Auth.CANDIDATE:
        request[candidate_key] = await candidate_service.sign_in(
            request.app[appkeys.engine], _candidate_token(request), dt.datetime.now(dt.UTC)
        )
    if not meta.public:
        principal = await authenticate(request)
        request[principal_key] = principal
        return await _noting_access(request, principal, meta, handler)
    return await _with_rotation(request, handler)


async def _noting_access(
    request: web.Request, principal: Principal, meta: Endpoint, handler: Handler
) -> web.StreamResponse:
    """Serve an authenticated member or operator request (its role permitting), and note
    its access row, refusals included."""
    status = 500
    try:
        if principal.role not in meta.access:
            raise ApiError(
                403,
                "permission_error",
                f"this action needs one of the roles: "
                f"{', '.join(sorted(r.value for r in meta.access))}",
            )
        response = await _with_rotation(request, handler)
        status = response.status
        return response
    except (ApiError, web.HTTPException) as exc:
        status = exc.status
        raise
    finally:
        await _note(request, principal, status)


async def _note(request: web.Request, principal: Principal, status: int) -> None:
    resource = request.match_info.route.resource
    access = Access(
        tenant_id=principal.tenant_id,
        actor=request_actor(request),
        method=request.method,
        route=resource.canonical if resource is not None else request.path,
        params=route_params(request.match_info),
        status=status,
        at=dt.datetime.now(dt.UTC),
    )
    try:
        await request.app[appkeys.access_log].note(access)
    except AccessLogUnavailable:
        raise ApiError(
            503,
            "api_error",
            "the audit log is not taking writes: try again shortly",
            headers={"Retry-After": "5"},
        ) from None


async def _with_rotation(request: web.Request, handler: Handler) -> web.StreamResponse:
    rotated = request.get(rotated_key)
    if rotated is None:
        return await handler(request)
    try:
        response = await handler(request)
    except ApiError as exc:
        exc.headers = {**exc.headers, **_cookie_headers(rotated)}
        raise
    set_session_cookie(response, rotated)
    return response


def _cookie_headers(issued: IssuedSession) -> dict[str, str]:
    response = web.Response()
    set_session_cookie(response, issued)
    return {"Set-Cookie": response.headers["Set-Cookie"], CSRF_HEADER: issued.csrf_token}


def set_session_cookie(response: web.StreamResponse, issued: IssuedSession) -> None:
    """The session cookie: HttpOnly, Secure, SameSite=Lax; its CSRF token in a header."""
    lifetime = issued.expires_at - dt.datetime.now(dt.UTC)
    response.set_cookie(
        SESSION_COOKIE,
        issued.token,
        max_age=max(0, int(lifetime.total_seconds())),
        path="/",
        httponly=True,
        secure=True,
        samesite="Lax",
    )
    response.headers[CSRF_HEADER] = issued.csrf_token
