"""Operational endpoints: liveness, readiness, and the OpenAPI document."""

from __future__ import annotations

import asyncio
from typing import Literal

import structlog
from aiohttp import web
from pydantic import BaseModel
from sqlalchemy import text

from control import appkeys
from control.web.endpoint import PUBLIC, endpoint
from control.web.openapi import build_openapi

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
    async with app[appkeys.engine].connect() as conn:
        await conn.execute(text("SELECT 1"))


async def _check_redis(app: web.Application) -> None:
    await app[appkeys.redis].ping()


@routes.get("/readyz")
@endpoint("The database and Redis are reachable", access=PUBLIC, response=Readiness, tag="ops")
async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    for name, check in (("database", _check_database), ("redis", _check_redis)):
        try:
            await asyncio.wait_for(check(request.app), CHECK_TIMEOUT_S)
            checks[name] = "ok"
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
    "Prometheus metrics (route templates, statuses and counts; no ids or secrets)",
    access=PUBLIC,
    tag="ops",
)
async def metrics(request: web.Request) -> web.Response:
    collected = request.app[appkeys.metrics]
    await collected.refresh(request.app)
    return web.Response(body=collected.render(), content_type="text/plain", charset="utf-8")


@routes.get("/openapi.json")
@endpoint("This API's OpenAPI 3.1 document", access=PUBLIC, tag="ops")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(build_openapi(request.app))
