"""Which rate-limit class a route belongs to, and which failures count as brute force.
Pure functions over the route's declared `Endpoint`."""

from __future__ import annotations

from control.web.endpoint import Auth, Endpoint
from core.settings import RouteClass

_READS = frozenset({"GET", "HEAD", "OPTIONS"})
# Routes that answer for a secret in their path or a token of their own kind.
_TOKEN_AUTH = frozenset({Auth.NONE, Auth.BOOTSTRAP, Auth.SANDBOX, Auth.CANDIDATE, Auth.REPORT})


def route_class(meta: Endpoint | None, method: str, path_template: str) -> RouteClass | None:
    """None: not limited (ops probes and documents: health checks must always answer)."""
    if meta is not None and meta.tag in ("ops", "static"):
        return None
    if meta is None:
        return RouteClass.READ if method in _READS else RouteClass.WRITE
    if meta.auth is Auth.PROXY:
        return RouteClass.PROXY
    if meta.auth in _TOKEN_AUTH or "{token}" in path_template:
        return RouteClass.TOKEN
    return RouteClass.READ if method in _READS else RouteClass.WRITE


def is_credential_failure(status: int, path_template: str) -> bool:
    """A failed credential check: any 401, and a 404 for a token named in the path (an
    unknown invite token is a guess)."""
    return status == 401 or (status == 404 and "{token}" in path_template)
