"""Typed keys for the resources the control-plane app holds."""

from __future__ import annotations

from aiohttp import web
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from control.audit.access import AccessLog
from control.email.sender import EmailSender
from control.guard.blocklist import Blocklist
from control.keys.monitor import KeyMonitor
from control.keys.service import KeyRevocationFollowUp
from control.keys.validation import KeyChecker
from control.ops.metrics import ControlMetrics
from control.sessions.signals import SignalHub, SignalPublisher
from control.usage.prices import PriceTable
from control.web.context import settings_key
from control.workers import Workers
from core.crypto.provider import KekProvider
from core.ratelimit import RateLimiter
from core.redis_names import RedisNames

settings = settings_key  # defined by the web layer, which reads it
engine = web.AppKey("engine", AsyncEngine)
access_log = web.AppKey("access_log", AccessLog)
redis = web.AppKey("redis", Redis)
kek = web.AppKey("kek", KekProvider)
signals = web.AppKey("signals", SignalPublisher)
hub = web.AppKey("hub", SignalHub)
names = web.AppKey("names", RedisNames)
email = web.AppKey("email", EmailSender)
key_checker = web.AppKey("key_checker", KeyChecker)
key_monitor = web.AppKey("key_monitor", KeyMonitor)
key_revocation = web.AppKey("key_revocation", KeyRevocationFollowUp)
prices = web.AppKey("prices", PriceTable)
metrics = web.AppKey("metrics", ControlMetrics)
limiter = web.AppKey("limiter", RateLimiter)
blocklist = web.AppKey("blocklist", Blocklist)
workers = web.AppKey("workers", Workers)  # set when this process runs the workers
