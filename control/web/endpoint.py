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


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoint:
    summary: str
    access: frozenset[Role]  # PUBLIC: no token needed
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    tag: str = "api"

    @property
    def public(self) -> bool:
        return not self.access


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
) -> Callable[[_F], _F]:
    meta = Endpoint(summary, access, body, query, response, status, tag)

    def mark(handler: _F) -> _F:
        setattr(handler, ATTRIBUTE, meta)
        return handler

    return mark


def endpoint_of(handler: Any) -> Endpoint | None:
    return getattr(handler, ATTRIBUTE, None)
