"""Security headers on every control-plane response, errors included."""

from __future__ import annotations

from aiohttp import web

from control.web.context import settings_key
from control.web.errors import Handler

_ALWAYS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@web.middleware
async def security_headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    for name, value in _ALWAYS.items():
        response.headers.setdefault(name, value)
    if request.app[settings_key].public_url.startswith("https:"):
        # Behind TLS: browsers keep to HTTPS for a year.
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    if request.path.startswith(("/v1/", "/internal/")):
        # API answers can carry tokens (sessions, invites, members): never cached.
        response.headers.setdefault("Cache-Control", "no-store")
    return response
