"""API errors and the middleware that renders every failure in one shape.

Shape: `{"error": {"type": "...", "message": "..."}}` (plus `details` for validation errors),
with the matching HTTP status. Messages carry ids and field names, never submitted values.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from pydantic import ValidationError

from core.redaction import redact_text

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Status → error type for failures raised by aiohttp itself (routing, body size, …).
_HTTP_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "method_not_allowed",
    409: "conflict_error",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limit_error",
    503: "unavailable",
}


class ApiError(Exception):
    """An error with its HTTP meaning; raise it anywhere below a view."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.details = details
        self.headers = headers or {}


def unauthenticated(message: str, realm: str = "metrux") -> ApiError:
    """A 401 that tells a client to send a Bearer token (RFC 6750)."""
    return ApiError(
        401,
        "authentication_error",
        message,
        headers={"WWW-Authenticate": f'Bearer realm="{realm}"'},
    )


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found_error", f"{what} not found")


def error_response(
    status: int,
    type_: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body: dict[str, Any] = {"type": type_, "message": redact_text(message)}
    if details is not None:
        body["details"] = details
    return web.json_response({"error": body}, status=status, headers=headers)


def validation_error(exc: ValidationError, where: str = "body") -> ApiError:
    """A 422 naming each bad field; the submitted values are never echoed."""
    details = [
        {
            "loc": ".".join(str(part) for part in (where, *error["loc"])),
            "msg": error["msg"].removeprefix("Value error, "),
        }
        for error in exc.errors(include_input=False, include_url=False, include_context=False)
    ]
    summary = "; ".join(f"{d['msg']} (at {d['loc']})" for d in details[:5])
    return ApiError(422, "validation_error", f"invalid request: {summary}", details=details)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if "\x00" in request.path or any("\x00" in k + v for k, v in request.query.items()):
        # Ids and filters are compared in the database, which cannot hold a NUL.
        return error_response(400, "invalid_request_error", "the URL holds a NUL character")
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.type, exc.message, exc.details, exc.headers)
    except ValidationError as exc:
        err = validation_error(exc)
        return error_response(err.status, err.type, err.message, err.details)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        type_ = _HTTP_TYPES.get(exc.status, "invalid_request_error")
        message = (
            exc.reason if exc.status != 404 else f"no route for {request.method} {request.path}"
        )
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return error_response(exc.status, type_, message, headers=headers)
    except Exception:
        # The traceback is logged (redacted at emission); the client learns nothing of it.
        log.exception("unhandled_error", method=request.method, path=request.path)
        return error_response(500, "api_error", "internal error")
