"""Member authentication (`Authorization: Bearer mxk_…`) and role enforcement."""

from __future__ import annotations

import dataclasses

from aiohttp import web
from sqlalchemy import select

from control import appkeys
from control.audit.actions import ActorType
from control.audit.store import Actor
from control.db.schema import members, tenants
from control.web.context import client_ip, request_id_key, user_agent
from control.web.endpoint import Endpoint, Role, endpoint_of
from control.web.errors import ApiError, Handler
from core.tokens import TokenKind, hash_token, token_kind


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: str
    member_id: str
    role: Role


principal_key = web.RequestKey("principal", Principal)


def _unauthenticated() -> ApiError:
    return ApiError(
        401,
        "authentication_error",
        "missing or invalid API token: send your mxk_ member token as a Bearer token",
        headers={"WWW-Authenticate": 'Bearer realm="metrux"'},
    )


def bearer_token(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


async def authenticate(request: web.Request) -> Principal:
    token = bearer_token(request)
    if token is None or token_kind(token) is not TokenKind.MEMBER:
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
    """The authenticated member behind a request, as the audit log records them."""
    return actor_for(request, ActorType.MEMBER, current_principal(request).member_id)
