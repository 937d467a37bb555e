"""A bare aiohttp pass-through: the baseline the proxy is measured against in the same run.

Server and client on aiohttp, as the proxy's are, and nothing else: no authentication, no
metering, no hashing, no records. It swaps in the upstream key and relays the body, chunk by
chunk for a stream. What the proxy costs above this is what metrux itself adds.

Usage: BENCH_API_KEY=... python -m bench.bare_passthrough PORT UPSTREAM_URL
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade"}
)
client_key = web.AppKey("client", aiohttp.ClientSession)


def make_app(upstream: str, api_key: str) -> web.Application:
    async def client_ctx(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=False
        ) as client:
            app[client_key] = client
            yield

    async def relay(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers.pop("x-api-key", None)
        headers["x-api-key"] = api_key
        body = await request.read()
        async with request.app[client_key].request(
            request.method, upstream + request.path_qs, data=body, headers=headers
        ) as answer:
            out = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
            if not answer.headers.get("content-type", "").startswith("text/event-stream"):
                return web.Response(status=answer.status, body=await answer.read(), headers=out)
            response = web.StreamResponse(status=answer.status, headers=out)
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application()
    app.cleanup_ctx.append(client_ctx)
    app.router.add_route("*", "/{tail:.*}", relay)
    return app


def main() -> None:
    import uvloop  # as the proxy: the comparison is of the code, not of the event loop

    port, upstream = int(sys.argv[1]), sys.argv[2].rstrip("/")
    api_key = os.environ["BENCH_API_KEY"]
    web.run_app(
        make_app(upstream, api_key),
        host="127.0.0.1",
        port=port,
        print=None,
        access_log=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
