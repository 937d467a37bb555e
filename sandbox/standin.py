"""A LOCAL STAND-IN for the Anthropic API, for `metrux demo --fake-upstream` only.

It answers Messages (JSON and SSE), count_tokens and models in Anthropic's wire format with
canned text, and checks that calls carry an x-api-key. It is not Claude and is never used
unless asked for. (The test suite's scriptable fake lives in tests/fakes/.)

Run: python -m sandbox.standin PORT
"""

from __future__ import annotations

import json
import sys
import uuid

from aiohttp import web

MODEL = "claude-sonnet-5-5"
TEXT = ["This ", "reply ", "comes ", "from ", "the ", "local ", "stand-in, ", "not ", "Claude."]


def _usage(output_tokens: int) -> dict[str, object]:
    return {
        "input_tokens": 21,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _headers() -> dict[str, str]:
    return {"request-id": f"req_standin_{uuid.uuid4().hex[:16]}", "x-standin": "metrux-demo"}


def _event(name: str, data: dict[str, object]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


async def messages(request: web.Request) -> web.StreamResponse:
    if not request.headers.get("x-api-key"):
        return web.json_response(
            {"type": "error", "error": {"type": "authentication_error", "message": "no key"}},
            status=401,
        )
    body = await request.json()
    model = body.get("model", MODEL)
    message = {"id": f"msg_{uuid.uuid4().hex[:20]}", "type": "message", "role": "assistant",
               "model": model, "stop_reason": None, "stop_sequence": None}  # fmt: skip
    if not body.get("stream"):
        full = {**message, "content": [{"type": "text", "text": "".join(TEXT)}],
                "stop_reason": "end_turn", "usage": _usage(len(TEXT))}  # fmt: skip
        return web.json_response(full, headers=_headers())
    response = web.StreamResponse(headers={**_headers(), "Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(
        _event(
            "message_start",
            {"type": "message_start", "message": {**message, "content": [], "usage": _usage(1)}},
        )
    )
    await response.write(
        _event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
    )
    for piece in TEXT:
        await response.write(
            _event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": piece},
                },
            )
        )
    await response.write(_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
    await response.write(
        _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": len(TEXT)},
            },
        )
    )
    await response.write(_event("message_stop", {"type": "message_stop"}))
    await response.write_eof()
    return response


async def count_tokens(request: web.Request) -> web.Response:
    return web.json_response(
        {"input_tokens": max(1, len(await request.read()) // 4)}, headers=_headers()
    )


async def models(request: web.Request) -> web.Response:
    data = [
        {
            "type": "model",
            "id": MODEL,
            "display_name": "Stand-in",
            "created_at": "2026-01-01T00:00:00Z",
        }
    ]
    return web.json_response(
        {"data": data, "has_more": False, "first_id": MODEL, "last_id": MODEL}, headers=_headers()
    )


def create_app() -> web.Application:
    app = web.Application(client_max_size=32 * 1024 * 1024)
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
    app.router.add_get("/v1/models", models)
    return app


if __name__ == "__main__":
    web.run_app(create_app(), host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
