"""A LOCAL STAND-IN for the Anthropic API: the one fake, shared by the test suite, the
benchmark (bench/fake_upstream.py) and `metrux demo --fake-upstream`.

It is not Claude. It speaks Anthropic's wire format: Messages (JSON and the full SSE event
sequence), count_tokens, models list and retrieve, Anthropic-shaped errors, request-id and
rate-limit headers. Where users see it (the demo), every answer is labelled: an
`x-standin` header, and reply text that says it comes from the stand-in.

Tests script it per call with `enqueue(...)` and assert on the requests it recorded. It
checks `x-api-key` against the keys it accepts, as Anthropic would (`accept` and `refuse`
change them mid-test: a key revoked at Anthropic; with no key given, any key is accepted),
and `outage` makes every endpoint answer an error (Anthropic down or overloaded).

Run: python -m sandbox.standin PORT   (labelled, accepts any key)
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import uuid
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

MODEL = "claude-sonnet-5-5"
USAGE = {
    "input_tokens": 25,
    "cache_creation_input_tokens": 10,
    "cache_read_input_tokens": 5,
    "cache_creation": {"ephemeral_5m_input_tokens": 7, "ephemeral_1h_input_tokens": 3},
    "output_tokens": 12,
    "service_tier": "standard",
    "server_tool_use": {"web_search_requests": 0},
}
RATE_HEADERS = {
    "anthropic-ratelimit-requests-limit": "4000",
    "anthropic-ratelimit-requests-remaining": "3999",
    "anthropic-ratelimit-tokens-limit": "400000",
}


@dataclasses.dataclass(frozen=True)
class Recorded:
    method: str
    path_qs: str
    headers: CIMultiDict[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclasses.dataclass
class JsonReply:
    status: int = 200
    body: Any = None  # None: a normal reply for the endpoint
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    delay: float = 0.0  # seconds before answering


@dataclasses.dataclass
class StreamReply:
    events: list[tuple[str, dict[str, Any]]] | None = None  # None: a normal text stream
    cut_after: int | None = None  # drop the connection after this many events
    cut_at_byte: int | None = None  # drop it after this many bytes (mid-event, say)
    hang_after: int | None = None  # stop sending (but keep the connection) after N events
    chunk_delay: float = 0.0
    split_every: int | None = None  # write each event in pieces of this many bytes


def error_body(type_: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type_, "message": message}, "request_id": "req_fake"}


def message_body(
    text: str = "Hello from the fake.",
    *,
    model: str = MODEL,
    usage: dict[str, Any] | None = None,
    tool_use: dict[str, Any] | None = None,
) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    if tool_use is not None:
        content.append({"type": "tool_use", **tool_use})
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "tool_use" if tool_use else "end_turn",
        "stop_sequence": None,
        "usage": usage or dict(USAGE),
    }


def stream_events(
    pieces: list[str] | None = None,
    *,
    model: str = MODEL,
    usage: dict[str, Any] | None = None,
    tool_use: dict[str, Any] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """The SSE sequence Anthropic sends for a reply made of these text pieces."""
    pieces = pieces if pieces is not None else ["Hello", " from", " the", " fake."]
    usage = usage or dict(USAGE)
    start_usage = {**usage, "output_tokens": 1}
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": f"msg_{uuid.uuid4().hex[:24]}",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
        ),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        ("ping", {"type": "ping"}),
    ]
    for piece in pieces:
        events.append(
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": piece},
                },
            )
        )
    events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    if tool_use is not None:
        block = {"type": "tool_use", "id": tool_use["id"], "name": tool_use["name"], "input": {}}
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": 1, "content_block": block},
            )
        )
        encoded = json.dumps(tool_use["input"])
        for i in range(0, len(encoded), 7):
            events.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 1,
                        "delta": {"type": "input_json_delta", "partial_json": encoded[i : i + 7]},
                    },
                )
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": 1}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": "tool_use" if tool_use else "end_turn",
                    "stop_sequence": None,
                },
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def encode_event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


STANDIN_PIECES = ["This ", "reply ", "comes ", "from ", "the ", "local ", "stand-in, ", "not ",
                  "Claude."]  # fmt: skip


class FakeAnthropic:
    def __init__(
        self,
        api_key: str | None,
        *,
        stream_pieces: list[str] | None = None,
        stream_pace: float = 0.0,
        record: bool = True,
        label: str | None = None,
    ) -> None:
        self.api_key = api_key
        self.accepted = {api_key} if api_key is not None else set()
        self._any_key = api_key is None  # the demo's stand-in: any x-api-key will do
        self._label = label  # set where users see the answers: an x-standin header
        self.outage: int | None = None  # when set, every call gets this status
        self._pace = stream_pace  # seconds between events of a default stream
        self._pieces = stream_pieces  # None: the default text stream
        self._keep = record  # False for benchmarks: nothing is kept per request
        self.requests: list[Recorded] = []
        self.replies: list[JsonReply | StreamReply] = []
        self.stream_aborted = asyncio.Event()  # the proxy dropped a stream we were sending
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_post("/v1/messages", self._messages)
        self.app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        self.app.router.add_get("/v1/models", self._models)
        self.app.router.add_get("/v1/models/{model_id}", self._model)
        self.app.router.add_route("*", "/{tail:.*}", self._unknown)

    def enqueue(self, *replies: JsonReply | StreamReply) -> None:
        self.replies.extend(replies)

    def accept(self, api_key: str) -> None:
        self.accepted.add(api_key)

    def refuse(self, api_key: str) -> None:
        self.accepted.discard(api_key)

    async def _record(self, request: web.Request) -> Recorded:
        recorded = Recorded(
            request.method, request.path_qs, CIMultiDict(request.headers), await request.read()
        )
        if self._keep:
            self.requests.append(recorded)
        return recorded

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"request-id": f"req_{uuid.uuid4().hex[:24]}", **RATE_HEADERS, **(extra or {})}
        if self._label is not None:
            headers["x-standin"] = self._label
        return headers

    def _auth_error(self, request: web.Request) -> web.Response | None:
        if self.outage is not None:
            return web.json_response(
                error_body("overloaded_error", "Overloaded"),
                status=self.outage,
                headers=self._headers(),
            )
        presented = request.headers.get("x-api-key")
        known = bool(presented) if self._any_key else presented in self.accepted
        if not known or "authorization" in request.headers:
            return web.json_response(
                error_body("authentication_error", "invalid x-api-key"),
                status=401,
                headers=self._headers(),
            )
        return None

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._record(request)
        if (refused := self._auth_error(request)) is not None:
            return refused
        reply = self.replies.pop(0) if self.replies else None
        wants_stream = bool(recorded.json().get("stream"))
        if isinstance(reply, StreamReply) or (reply is None and wants_stream):
            return await self._stream(request, reply or StreamReply(chunk_delay=self._pace))
        reply = reply or JsonReply()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        default = message_body("".join(self._pieces)) if self._pieces else message_body()
        body = reply.body if reply.body is not None else default
        return web.json_response(body, status=reply.status, headers=self._headers(reply.headers))

    async def _stream(self, request: web.Request, reply: StreamReply) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200,
            headers=self._headers(
                {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
            ),
        )
        await response.prepare(request)
        events = reply.events if reply.events is not None else stream_events(self._pieces)
        if reply.cut_at_byte is not None:
            whole = b"".join(encode_event(name, data) for name, data in events)
            await response.write(whole[: reply.cut_at_byte])
            assert request.transport is not None
            request.transport.abort()
            return response
        try:
            for n, (name, data) in enumerate(events):
                if reply.cut_after is not None and n == reply.cut_after:
                    assert request.transport is not None
                    request.transport.abort()
                    return response
                if reply.hang_after is not None and n == reply.hang_after:
                    await asyncio.sleep(3600)
                payload = encode_event(name, data)
                step = reply.split_every or len(payload)
                for i in range(0, len(payload), step):
                    await response.write(payload[i : i + step])
                if reply.chunk_delay:
                    await asyncio.sleep(reply.chunk_delay)
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            self.stream_aborted.set()
            raise
        return response

    async def _count_tokens(self, request: web.Request) -> web.Response:
        recorded = await self._record(request)
        if (refused := self._auth_error(request)) is not None:
            return refused
        if self.replies and isinstance(self.replies[0], JsonReply):
            reply = self.replies.pop(0)
            assert isinstance(reply, JsonReply)
            return web.json_response(
                reply.body, status=reply.status, headers=self._headers(reply.headers)
            )
        return web.json_response(
            {"input_tokens": max(1, len(recorded.body) // 4)}, headers=self._headers()
        )

    async def _models(self, request: web.Request) -> web.Response:
        await self._record(request)
        if (refused := self._auth_error(request)) is not None:
            return refused
        data = [
            {
                "type": "model",
                "id": MODEL,
                "display_name": "Claude Sonnet 5.5",
                "created_at": "2025-09-29T00:00:00Z",
            },
            {
                "type": "model",
                "id": "claude-haiku-4-5",
                "display_name": "Claude Haiku 4.5",
                "created_at": "2025-10-01T00:00:00Z",
            },
        ]
        return web.json_response(
            {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]},
            headers=self._headers(),
        )

    async def _model(self, request: web.Request) -> web.Response:
        await self._record(request)
        if (refused := self._auth_error(request)) is not None:
            return refused
        model_id = request.match_info["model_id"]
        return web.json_response(
            {
                "type": "model",
                "id": model_id,
                "display_name": model_id,
                "created_at": "2025-09-29T00:00:00Z",
            },
            headers=self._headers(),
        )

    async def _unknown(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response(
            error_body("not_found_error", "not found"), status=404, headers=self._headers()
        )


def main() -> None:
    """The demo's stand-in: labelled, any key accepted, nothing kept per request."""
    fake = FakeAnthropic(None, stream_pieces=STANDIN_PIECES, record=False, label="metrux-demo")
    web.run_app(fake.app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
