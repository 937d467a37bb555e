"""Typed keys for what the proxy application holds."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from core.settings import Settings
from proxy.control_link import ControlLink
from proxy.keepalive import KeepaliveWatchdog
from proxy.metrics import ProxyMetrics
from proxy.publisher import UsagePublisher
from proxy.session import ProxySession
from proxy.signals import SignalWatcher

settings = web.AppKey("settings", Settings)
session = web.AppKey("session", ProxySession)
link = web.AppKey("link", ControlLink)
signals = web.AppKey("signals", SignalWatcher)
publisher = web.AppKey("publisher", UsagePublisher)
http = web.AppKey("http", aiohttp.ClientSession)
upstream_url = web.AppKey("upstream_url", str)
watchdog = web.AppKey("watchdog", KeepaliveWatchdog)
metrics = web.AppKey("metrics", ProxyMetrics)
