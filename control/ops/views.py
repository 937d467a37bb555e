"""Operational endpoints: liveness, readiness, and the OpenAPI document."""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import time
from typing import Any, Literal

import structlog
from aiohttp import web
from pydantic import BaseModel

from control import appkeys
from control.db.engine import ping
from control.ops.scrape import refresh
from control.web.endpoint import PUBLIC, Auth, endpoint
from control.web.errors import ApiError, unauthenticated
from control.web.openapi import build_openapi
from control.web.principal import bearer_token

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()
CHECK_TIMEOUT_S = 2.0


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, Literal["ok", "failed"]]


@routes.get("/healthz")
@endpoint("The process is alive", access=PUBLIC, response=Health, tag="ops")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _check_database(app: web.Application) -> None:
    await ping(app[appkeys.engine])


async def _check_redis(app: web.Application) -> None:
    await app[appkeys.redis].ping()


class NotReady(Exception):
    pass


async def _check_workers(app: web.Application) -> None:
    workers = app.get(appkeys.workers)  # set when this process runs the workers
    if workers is not None and (down := workers.down()):
        raise NotReady(f"down: {', '.join(down)}")


async def _check_ingest(app: web.Application) -> None:
    """The oldest record waiting on the ingest stream is not older than the setting allows
    (stored records leave the stream, so its first entry is the oldest unstored)."""
    oldest: Any = await app[appkeys.redis].xrange(app[appkeys.names].usage_stream, count=1)
    if not oldest:
        return
    entry_id = oldest[0][0]
    queued_ms = int((entry_id.decode() if isinstance(entry_id, bytes) else entry_id).split("-")[0])
    age_s = time.time() - queued_ms / 1000
    if age_s > app[appkeys.settings].ready_max_backlog_s:
        raise NotReady(f"the oldest record waiting has waited {age_s:.0f} s")


@routes.get("/readyz")
@endpoint(
    "The database and Redis are reachable, this process's background workers are running, "
    "and usage ingestion keeps up",
    access=PUBLIC,
    response=Readiness,
    tag="ops",
)
async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    for name, check in (
        ("database", _check_database),
        ("redis", _check_redis),
        ("workers", _check_workers),
        ("ingest", _check_ingest),
    ):
        try:
            await asyncio.wait_for(check(request.app), CHECK_TIMEOUT_S)
            checks[name] = "ok"
        except NotReady as exc:
            log.warning("readiness_check_failed", check=name, reason=str(exc))
            checks[name] = "failed"
        except Exception as exc:  # any failure means "not ready"; the type is logged
            log.warning("readiness_check_failed", check=name, error=type(exc).__name__)
            checks[name] = "failed"
    ready = all(v == "ok" for v in checks.values())
    return web.json_response(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )


@routes.get("/metrics")
@endpoint(
    "Prometheus metrics (route templates, statuses and counts; no ids or secrets), for a "
    "scraper holding METRUX_METRICS_TOKEN",
    access=PUBLIC,
    auth=Auth.METRICS,
    tag="ops",
)
async def metrics(request: web.Request) -> web.Response:
    expected = request.app[appkeys.settings].metrics_token
    if expected is None:
        raise ApiError(404, "not_found", "metrics are off: set METRUX_METRICS_TOKEN to serve them")
    given = bearer_token(request)
    if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
        raise unauthenticated("missing or wrong metrics token: send METRUX_METRICS_TOKEN as Bearer")
    collected = request.app[appkeys.metrics]
    await refresh(request.app)
    return web.Response(body=collected.render(), content_type="text/plain", charset="utf-8")


@routes.get("/openapi.json")
@endpoint("This API's OpenAPI 3.1 document", access=PUBLIC, tag="ops")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(build_openapi(request.app))


SECURITY_CONTACT = "mailto:security@metrux.ai"  # the operator's published address


@routes.get("/.well-known/security.txt")
@endpoint("Where to report a vulnerability (RFC 9116)", access=PUBLIC, tag="ops")
async def security_txt(request: web.Request) -> web.Response:
    base = request.app[appkeys.settings].public_url
    # Regenerated on each request, so Expires is always in the future and under a year.
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=180)).replace(microsecond=0)
    lines = [
        f"Contact: {SECURITY_CONTACT}",
        f"Expires: {expires.isoformat().replace('+00:00', 'Z')}",
        f"Policy: {base}/.well-known/security-policy.txt",
        "Preferred-Languages: en",
        f"Canonical: {base}/.well-known/security.txt",
    ]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


@routes.get("/.well-known/security-policy.txt")
@endpoint("The responsible-disclosure policy security.txt points to", access=PUBLIC, tag="ops")
async def security_policy(request: web.Request) -> web.Response:
    return web.Response(
        text=(
            "Report vulnerabilities to security@metrux.ai. Include what you found and how to\n"
            "reproduce it; encrypt nothing you cannot share, and send no customer data.\n"
            "We answer within three working days and will not pursue good-faith research that\n"
            "avoids privacy violations, data destruction and service disruption.\n"
        ),
        content_type="text/plain",
    )
