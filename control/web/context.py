"""Per-request context: request id, client address, and JSON body parsing."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from typing import TypeVar

import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

from control.web.client_ip import resolve_client_ip
from control.web.errors import ApiError, Handler, validation_error
from core.settings import Settings
from core.wipe import wipe_bytes

_M = TypeVar("_M", bound=BaseModel)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
# The settings, under the key control/appkeys.py re-exports: the web layer needs them
# (trusted proxies, the public URL) and imports no domain.
settings_key = web.AppKey("settings", Settings)
request_id_key = web.RequestKey("request_id", str)
_client_ip_key = web.RequestKey("client_ip", str)
MAX_USER_AGENT = 512


@web.middleware
async def request_context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give each request an id (a well-formed incoming X-Request-Id is kept) and bind it to logs."""
    incoming = request.headers.get("X-Request-Id", "")
    request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
    request[request_id_key] = request_id
    context = {"request_id": request_id}
    if "session_id" in request.match_info:
        context["session_id"] = request.match_info["session_id"][:64]
    with structlog.contextvars.bound_contextvars(**context):
        response = await handler(request)
    response.headers["X-Request-Id"] = request_id
    return response


def client_ip(request: web.Request) -> str | None:
    """The client's address: X-Forwarded-For counts only from METRUX_TRUSTED_PROXIES."""
    cached = request.get(_client_ip_key)
    if cached is None:
        trusted = request.app[settings_key].trusted_proxies
        forwarded = request.headers.getall("X-Forwarded-For", []) if trusted else []
        cached = resolve_client_ip(request.remote, forwarded, trusted) or ""
        request[_client_ip_key] = cached
    return cached or None


def user_agent(request: web.Request) -> str | None:
    agent = request.headers.get("User-Agent")
    return agent[:MAX_USER_AGENT] if agent else None


async def parse_json(request: web.Request, model: type[_M]) -> _M:
    """Read and validate a JSON body: 415 if it isn't JSON, 400 if it doesn't parse, 422 if
    it doesn't fit the model. The body size limit (413) is the application's client_max_size."""
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    return parse_json_text(decode_body(await request.read()), model)[1]


async def read_body_wiping_chunks(
    request: web.Request, limit: int, content_type: str = "application/json"
) -> bytearray:
    """The body (JSON, or the given type) in a bytearray the caller zeroes, each chunk
    aiohttp handed over zeroed at once: for a body that holds a secret (415, 413 as
    parse_json)."""
    if request.content_type != content_type:
        raise ApiError(415, "unsupported_media_type", f"send the body as {content_type}")
    body = bytearray()
    while chunk := await request.content.readany():
        body += chunk
        wipe_bytes(chunk)
        if len(body) > limit:
            body[:] = bytes(len(body))
            raise ApiError(413, "request_too_large", f"the body may be at most {limit} bytes")
    return body


def decode_body(raw: bytes | bytearray) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_request_error", "body is not valid UTF-8") from None


def parse_json_text(text: str, model: type[_M]) -> tuple[object, _M]:
    """The parsed document and the model validated from it (400, 422 as parse_json)."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise ApiError(400, "invalid_request_error", "body is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ApiError(
            400, "invalid_request_error", f"body is not valid JSON: {exc.msg} at {exc.pos}"
        ) from None
    except ValueError:  # an integer of more digits than Python will read (4,300)
        raise ApiError(400, "invalid_request_error", "body holds a number too long") from None
    if _holds_nul(data):
        raise ApiError(400, "invalid_request_error", "body holds a NUL character")
    try:
        return data, model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


def _holds_nul(value: object) -> bool:
    """Whether any string in a parsed JSON document (keys included) holds a NUL: no column
    of ours can store one, and no real input has one. Iterative: a document nested nearly
    as deep as the parser allows must not exhaust the stack here."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def parse_query(request: web.Request, model: type[_M]) -> _M:
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise validation_error(exc, where="query") from None


def require_timezone(value: dt.datetime | None) -> dt.datetime | None:
    """A query's time must say its timezone (pydantic field validator)."""
    if value is not None and value.tzinfo is None:
        raise ValueError("give a timezone, e.g. 2026-01-01T00:00:00Z")
    return value
