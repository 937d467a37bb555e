"""Errors the proxy itself produces, in Anthropic's error shape.

`{"type": "error", "error": {"type": …, "message": …}}` with the matching status, so every
client (SDKs, Claude Code) reports them as it would an API error. Messages hold ids and
limits, never a token or a key.
"""

from __future__ import annotations

import json

from aiohttp import web


class ProxyError(Exception):
    def __init__(
        self, status: int, type_: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.headers = headers or {}

    def response(self) -> web.Response:
        body = json.dumps({"type": "error", "error": {"type": self.type, "message": self.message}})
        # Our own 4xx are final: tell the SDKs and Claude Code not to retry them (a bare 401
        # makes Claude Code retry for minutes). 429 says when to come back; 5xx may be retried.
        headers = {"x-metrux-proxy-error": "1"}
        if 400 <= self.status < 500 and self.status != 429:
            headers["x-should-retry"] = "false"
        headers.update(self.headers)
        return web.Response(
            status=self.status, body=body, content_type="application/json", headers=headers
        )


def unauthorized() -> ProxyError:
    return ProxyError(401, "authentication_error", "invalid session token")


def not_found(method: str, path: str) -> ProxyError:
    return ProxyError(404, "not_found_error", f"{method} {path} is not served by this proxy")
