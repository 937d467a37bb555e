"""Errors the proxy itself produces, in Anthropic's error shape.

`{"type": "error", "error": {"type": …, "message": …}}` with the matching status, so every
client (SDKs, Claude Code) reports them as it would an API error. Messages hold ids and
limits, never a token or a key.
"""

from __future__ import annotations

from proxy.http.connection import error_response


class ProxyError(Exception):
    def __init__(
        self, status: int, type_: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.headers = headers or {}

    def render(self, *, keep_alive: bool = True) -> bytes:
        return error_response(
            self.status, self.type, self.message, headers=self.headers, keep_alive=keep_alive
        )


def unauthorized() -> ProxyError:
    return ProxyError(401, "authentication_error", "invalid session token")


def not_found(method: str, path: str) -> ProxyError:
    return ProxyError(404, "not_found_error", f"{method} {path} is not served by this proxy")
