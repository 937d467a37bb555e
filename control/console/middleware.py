"""Console responses: errors as pages rather than JSON, a strict CSP, and no caching."""

from __future__ import annotations

import structlog
from aiohttp import web

from control.console.page import render
from control.web.errors import ApiError, Handler

log = structlog.get_logger(__name__)
PREFIX = "/console"
# The candidate's pages: the invite landing page and the my-data page.
CANDIDATE_PREFIXES = ("/invite/", "/me/")
# Only this origin's own files: no inline script or style, no other origin, no framing.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
_TITLES = {
    401: "Sign in to continue",
    403: "Not allowed",
    404: "Not found",
    409: "That cannot be done now",
    422: "Please check the form",
    429: "Too many requests",
    503: "Unavailable for a moment",
}


@web.middleware
async def console_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    path = request.path
    if not (path in (PREFIX, "/me") or path.startswith((PREFIX + "/", *CANDIDATE_PREFIXES))):
        return await handler(request)
    try:
        response = await handler(request)
    except ApiError as exc:
        response = _error_page(request, exc.status, exc.type, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _error_page(request, exc.status, "not_found_error", "There is no such page.", {})
    except Exception:
        # Logged (redacted at emission) as the API's errors are; the page says nothing more.
        log.exception("unhandled_error", method=request.method, path=request.path)
        response = _error_page(request, 500, "api_error", "", {})
    response.headers["Content-Security-Policy"] = CSP
    # Not no-referrer: under it a browser sends `Origin: null` with its own form posts, and
    # the same-origin check refuses them. same-origin still sends nothing to other sites.
    response.headers["Referrer-Policy"] = "same-origin"
    if not request.path.startswith(PREFIX + "/static/"):
        response.headers["Cache-Control"] = "no-store"
    return response


def _error_page(
    request: web.Request, status: int, error_type: str, message: str, headers: dict[str, str]
) -> web.Response:
    title = _TITLES.get(status, "Something went wrong" if status >= 500 else "Not possible")
    response = render(
        request,
        "error.html",
        {
            "status": status,
            "title": title,
            "error_type": error_type,
            "message": message if status < 500 else "",
        },
        status=status,
    )
    for name in ("Retry-After", "Set-Cookie", "WWW-Authenticate"):
        if name in headers:
            response.headers[name] = headers[name]
    return response
