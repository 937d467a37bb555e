"""Typed keys for what the proxy application holds."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from proxy.keepalive import KeepaliveWatchdog
from proxy.metrics import ProxyMetrics
from proxy.publisher import UsagePublisher
from proxy.session import ProxySession

session = web.AppKey("session", ProxySession)
publisher = web.AppKey("publisher", UsagePublisher)
http = web.AppKey("http", aiohttp.ClientSession)
upstream_url = web.AppKey("upstream_url", str)
watchdog = web.AppKey("watchdog", KeepaliveWatchdog)
metrics = web.AppKey("metrics", ProxyMetrics)
