"""The overview page: live sessions and whether their proxies are online, calls, tokens
and cost today, and a banner when the default key is missing, invalid or unverified."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from aiohttp import web

from control import appkeys
from control.console.page import render
from control.evidence.report import merged_usage
from control.keys import store as key_store
from control.sessions import store as session_store
from control.usage import store as usage_store
from control.usage.prices import PriceTable
from control.usage.summary import summarise
from control.web.endpoint import ANY_MEMBER, PUBLIC, Auth, endpoint
from control.web.principal import current_principal
from core.signals import LIVE_STATES

routes = web.RouteTableDef()
LIVE_SHOWN = 50


def _cost(records: list[dict[str, Any]], prices: PriceTable) -> tuple[Decimal, int]:
    """The cost of these calls from the price table, and how many had no price."""
    total, unpriced = Decimal(0), 0
    for record in records:
        usage = merged_usage(record.get("usage"))
        if not usage:
            continue
        cost = prices.cost(record.get("model_served") or record.get("model_requested"), usage)
        if cost is None:
            unpriced += 1
        else:
            total += cost.total
    return total, unpriced


@routes.get("/console/")
@endpoint("The console's overview page", access=ANY_MEMBER, tag="console")
async def overview(request: web.Request) -> web.Response:
    tenant_id = current_principal(request).tenant_id
    midnight = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    live_only = session_store.SessionFilter(states=tuple(sorted(LIVE_STATES)))
    async with request.app[appkeys.engine].connect() as conn:
        keys = await key_store.list_keys(conn, tenant_id)
        live = await session_store.list_sessions(conn, tenant_id, live_only, limit=LIVE_SHOWN)
        today = await usage_store.records_of_tenant_since(conn, tenant_id, midnight)
    signals = request.app[appkeys.signals]
    online = {s.id: await signals.proxy_online(s.id) for s, _ in live}
    prices = request.app[appkeys.prices]
    cost, unpriced = _cost(today, prices)
    return render(
        request,
        "overview.html",
        {
            "default_key": next((k for k in keys if k.is_default and k.revoked_at is None), None),
            "key_count": len(keys),
            "live": live,
            "online": online,
            "today": summarise(today),
            "cost": f"{cost.quantize(Decimal('0.01'))} {prices.currency}",
            "unpriced": unpriced,
        },
    )


@routes.get("/console")
@endpoint("The console (to its overview)", access=PUBLIC, auth=Auth.NONE, tag="console")
async def console_root(request: web.Request) -> web.Response:
    return web.Response(status=308, headers={"Location": "/console/"})
