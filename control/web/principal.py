"""Who is calling: the authenticated principal a request carries, and the bearer token.

control/identity/middleware.py authenticates each request from its route's declared
`Endpoint` and stores the `Principal` here; views read it with `current_principal`.
"""

from __future__ import annotations

import dataclasses

from aiohttp import web

from control.web.endpoint import Role


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: str
    member_id: str | None  # None for a platform operator
    role: Role
    operator_id: str | None = None
    session_hash: str | None = None  # set when authenticated by a browser session cookie


principal_key = web.RequestKey("principal", Principal)
# A member signed in through the identity provider carries this cookie, and sends its
# session's CSRF token back in this header on every unsafe request.
SESSION_COOKIE = "metrux_session"
CSRF_HEADER = "X-CSRF-Token"


def bearer_token(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def current_principal(request: web.Request) -> Principal:
    return request[principal_key]
