"""The audit actor behind an HTTP request: its address, user agent and request id."""

from __future__ import annotations

from aiohttp import web

from control.audit.actions import ActorType
from control.audit.store import Actor
from control.web.context import client_ip, request_id_key, user_agent
from control.web.principal import current_principal


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
