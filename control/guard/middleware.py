"""The guard in front of every control-plane route: blocked addresses get 403 and
over-limit callers 429 before any other work; failed credential checks feed the
brute-force detector.

Rate limits apply per client IP and per presented credential (a hash of the bearer token
or session cookie), by route class. If Redis cannot answer within LIMITER_TIMEOUT_S, token
routes fail closed (503) and the rest fail open, logged (SECURITY-CHECKS.md C54).
"""

from __future__ import annotations

import asyncio
import hashlib
import math

import structlog
from aiohttp import web
from redis.exceptions import RedisError

from control import appkeys
from control.audit.actions import ActorType
from control.audit.store import Actor
from control.guard.routes import is_credential_failure, route_class
from control.web.context import client_ip, request_id_key, user_agent
from control.web.endpoint import endpoint_of
from control.web.errors import ApiError, Handler
from control.web.principal import SESSION_COOKIE
from core.ratelimit import Decision
from core.settings import RouteClass

log = structlog.get_logger(__name__)
# Long enough for a loaded host (CI measured 250 ms misses under CPU contention), short
# enough that an unreachable Redis costs a request at most a second.
LIMITER_TIMEOUT_S = 1.0


def _credential(request: web.Request) -> str | None:
    """A short hash of whatever credential the request presents, as its identity."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    secret = value.strip() if scheme.lower() == "bearer" else ""
    secret = secret or request.cookies.get(SESSION_COOKIE, "")
    if not secret:
        return None
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def _template(request: web.Request) -> str:
    info = request.match_info
    if info.http_exception is not None or info.route.resource is None:
        return ""
    return info.route.resource.canonical


def _blocked(decision: Decision) -> ApiError:
    # A block with an end says when it ends; an operator's open-ended block does not.
    seconds = math.ceil(decision.retry_after_s)
    headers = {"Retry-After": str(seconds)} if seconds > 0 else {}
    return ApiError(
        403, "permission_error", "requests from this address are blocked", headers=headers
    )


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    app = request.app
    ip = client_ip(request) or "unknown"
    template = _template(request)
    meta = endpoint_of(request.match_info.handler) if template else None
    limited = route_class(meta, request.method, template) if template else RouteClass.READ
    blocklist = app[appkeys.blocklist]
    decision: Decision | None = None
    if limited is not None:
        decision = await _check(request, ip, limited)
        if decision is not None and decision.blocked:
            if not blocklist.allowlisted(ip):
                raise _blocked(decision)
            decision = None
        if decision is not None and not decision.allowed:
            app[appkeys.metrics].rate_limited.labels(limited.value).inc()
            raise ApiError(
                429,
                "rate_limit_error",
                f"too many requests: {app[appkeys.settings].rate_limits[limited]} per "
                "client and per credential for this kind of call",
                headers=decision.headers(),
            )
    try:
        response = await handler(request)
    except ApiError as exc:
        if is_credential_failure(exc.status, template):
            await _failed(request, ip, exc.status)
        if decision is not None:
            exc.headers = {**decision.headers(), **exc.headers}
        raise
    if decision is not None and not response.prepared:
        response.headers.update(decision.headers())
    return response


async def _check(request: web.Request, ip: str, limited: RouteClass) -> Decision | None:
    app = request.app
    names, rate = app[appkeys.names], app[appkeys.settings].rate_limits[limited]
    limits = [(names.rate_key(limited.value, "ip", ip), rate)]
    credential = _credential(request)
    if credential is not None:
        limits.append((names.rate_key(limited.value, "id", credential), rate))
    try:
        async with asyncio.timeout(LIMITER_TIMEOUT_S):
            return await app[appkeys.limiter].check(names.block_key(ip), limits)
    except (RedisError, OSError, TimeoutError) as exc:
        log.error("rate_limiter_unavailable", error=type(exc).__name__, route_class=limited)
        app[appkeys.metrics].limiter_unavailable.inc()
        if limited is RouteClass.TOKEN:
            raise ApiError(
                503, "unavailable", "temporarily unavailable; retry shortly",
                headers={"Retry-After": "5"},
            ) from None  # fmt: skip
        return None


async def _failed(request: web.Request, ip: str, status: int) -> None:
    target = request.match_info.get("session_id")
    actor = Actor(
        type=ActorType.SYSTEM,
        id="brute-force-detector",
        ip=ip,
        user_agent=user_agent(request),
        request_id=request.get(request_id_key),
    )
    reason = (
        f"repeated failed credential checks ({status} on {request.method} {_template(request)})"
    )
    try:
        block = await request.app[appkeys.blocklist].record_failure(ip, target, reason, actor)
    except (RedisError, OSError) as exc:
        log.error("brute_force_detector_unavailable", error=type(exc).__name__)
        return
    if block is not None:
        request.app[appkeys.metrics].blocks.inc()
        log.warning("ip_blocked", ip=ip, seconds=block.seconds, reason=reason)
