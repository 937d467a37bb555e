"""Declarative route metadata: who may call a route, and what it takes and returns.

Every handler carries an `Endpoint` (set by the `endpoint` decorator). The auth middleware
reads `access` from it, and the OpenAPI document is generated from it, so the two cannot
drift from the route table. A handler without one is refused at run time and by a test.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    REVIEWER = "reviewer"


# Rank order: a role may act on or grant roles at or below its own rank.
ROLE_RANK = {Role.REVIEWER: 1, Role.ADMIN: 2, Role.OWNER: 3}

PUBLIC: frozenset[Role] = frozenset()
ANY_MEMBER = frozenset(Role)
ADMINS = frozenset({Role.OWNER, Role.ADMIN})


class Auth(StrEnum):
    MEMBER = "member"  # Bearer mxk_…, checked by the auth middleware against `access`
    NONE = "none"  # anyone
    BOOTSTRAP = "bootstrap"  # Bearer mxb_…, checked by the handler (the proxy's attach)
    PROXY = "proxy"  # Bearer mxp_…, checked by the handler (an attached proxy's link)
    SANDBOX = "sandbox"  # Bearer mxs_…, checked by the handler (the candidate's own calls)
    CANDIDATE = "candidate"  # Bearer mxc_…, checked by the auth middleware (/v1/auth/me…)
    REPORT = "report"  # a member token, or a report link's mxr_ token, checked by the handler
    METRICS = "metrics"  # Bearer METRUX_METRICS_TOKEN, checked by the handler (GET /metrics)


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoint:
    summary: str
    access: frozenset[Role]  # roles allowed when auth is MEMBER
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    tag: str = "api"
    auth: Auth = Auth.MEMBER

    @property
    def public(self) -> bool:
        """True when the auth middleware asks for no member token."""
        return self.auth is not Auth.MEMBER


_F = TypeVar("_F", bound=Callable[..., Any])
ATTRIBUTE = "__metrux_endpoint__"


def endpoint(
    summary: str,
    *,
    access: frozenset[Role],
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    status: int = 200,
    tag: str = "api",
    auth: Auth | None = None,
) -> Callable[[_F], _F]:
    if auth is None:
        auth = Auth.MEMBER if access else Auth.NONE
    meta = Endpoint(summary, access, body, query, response, status, tag, auth)

    def mark(handler: _F) -> _F:
        setattr(handler, ATTRIBUTE, meta)
        return handler

    return mark


def endpoint_of(handler: Any) -> Endpoint | None:
    return getattr(handler, ATTRIBUTE, None)
