"""Authentication and role enforcement, for every route from its declared `Endpoint`.

Members send `Authorization: Bearer mxk_…`; candidates `mxc_…` on their own routes.
Platform operators send `mxo_…` with `X-Metrux-Tenant: <tenant id>` and may call any member
route that only reads (GET); each such read is written to that tenant's audit log first.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from aiohttp import web
from sqlalchemy import select

from control import appkeys
from control.audit import store as audit
from control.audit.actions import ActorType, AuditAction
from control.audit.store import Actor
from control.candidates import service as candidate_service
from control.candidates.service import Candidate
from control.db.schema import members, operators, tenants
from control.web.context import client_ip, request_id_key, user_agent
from control.web.endpoint import Auth, Endpoint, Role, endpoint_of
from control.web.errors import ApiError, Handler, not_found, unauthenticated
from core.tokens import TokenKind, hash_token, token_kind


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: str
    member_id: str | None  # None for a platform operator
    role: Role
    operator_id: str | None = None


principal_key = web.RequestKey("principal", Principal)
candidate_key = web.RequestKey("candidate", Candidate)
OPERATOR_TENANT_HEADER = "X-Metrux-Tenant"
_READS = frozenset({"GET", "HEAD"})


def _unauthenticated() -> ApiError:
    return unauthenticated(
        "missing or invalid API token: send your mxk_ member token as a Bearer token"
    )


def bearer_token(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


async def authenticate(request: web.Request) -> Principal:
    token = bearer_token(request)
    kind = token_kind(token) if token is not None else None
    if kind is TokenKind.OPERATOR and token is not None:
        return await _authenticate_operator(request, token)
    if token is None or kind is not TokenKind.MEMBER:
        raise _unauthenticated()
    query = (
        select(members.c.id, members.c.tenant_id, members.c.role)
        .join(tenants, tenants.c.id == members.c.tenant_id)
        .where(
            members.c.token_hash == hash_token(token),
            members.c.revoked_at.is_(None),
            tenants.c.closed_at.is_(None),
        )
    )
    async with request.app[appkeys.engine].connect() as conn:
        row = (await conn.execute(query)).first()
    if row is None:
        raise _unauthenticated()
    return Principal(tenant_id=row.tenant_id, member_id=row.id, role=Role(row.role))


async def _authenticate_operator(request: web.Request, token: str) -> Principal:
    """A platform operator reading one tenant's data; the read is audited in that
    tenant's log before it happens."""
    engine = request.app[appkeys.engine]
    async with engine.connect() as conn:
        operator = (
            await conn.execute(
                select(operators.c.id).where(
                    operators.c.token_hash == hash_token(token), operators.c.revoked_at.is_(None)
                )
            )
        ).first()
    if operator is None:
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
        exists = (await conn.execute(select(tenants.c.id).where(tenants.c.id == tenant_id))).first()
        if exists is None:
            raise not_found("tenant")
        await audit.record(
            conn,
            actor_for(request, ActorType.OPERATOR, f"operator:{operator.id}"),
            AuditAction.OPERATOR_READ,
            tenant_id=tenant_id,
            details={"method": request.method, "path": request.path},
        )
    return Principal(tenant_id=tenant_id, member_id=None, role=Role.OWNER, operator_id=operator.id)


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
            request.app[appkeys.engine], bearer_token(request), dt.datetime.now(dt.UTC)
        )
    if not meta.public:
        principal = await authenticate(request)
        if principal.role not in meta.access:
            raise ApiError(
                403,
                "permission_error",
                f"this action needs one of the roles: "
                f"{', '.join(sorted(r.value for r in meta.access))}",
            )
        request[principal_key] = principal
    return await handler(request)


def current_principal(request: web.Request) -> Principal:
    return request[principal_key]


def actor_for(request: web.Request, actor_type: ActorType, actor_id: str | None) -> Actor:
    """An audit actor with this request's address, user agent and request id."""
    return Actor(
        type=actor_type,
        id=actor_id,
        ip=client_ip(request),
        user_agent=user_agent(request),
        request_id=request.get(request_id_key),
    )


def request_actor(request: web.Request) -> Actor:
    """The authenticated member (or operator) behind a request, as the audit log records them."""
    principal = current_principal(request)
    if principal.operator_id is not None:
        return actor_for(request, ActorType.OPERATOR, f"operator:{principal.operator_id}")
    return actor_for(request, ActorType.MEMBER, principal.member_id)


def current_candidate(request: web.Request) -> Candidate:
    return request[candidate_key]
