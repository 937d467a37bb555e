"""Every console route, for the app to install."""

from __future__ import annotations

from aiohttp import web

from control.console import (
    audit,
    candidate,
    invites,
    keys,
    members,
    oidc,
    overview,
    sessions,
    signin,
    static,
)
from control.console.page import setup_templates

ROUTE_TABLES = (
    static.routes,
    signin.routes,
    oidc.routes,
    overview.routes,
    keys.routes,
    invites.routes,
    sessions.routes,
    members.routes,
    audit.routes,
    candidate.routes,
)


def install(app: web.Application) -> None:
    setup_templates(app)
    for table in ROUTE_TABLES:
        app.add_routes(table)
