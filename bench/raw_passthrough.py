"""The floor: a pass-through on raw asyncio protocols, httptools and uvloop, and nothing
else (no authentication, no metering, no limits, no records).

It is what any Python proxy on this stack costs at the least; the bench reports the proxy
against it as well as against the bare aiohttp pass-through. Keep-alive both ways,
Content-Length bodies relayed as they come, everything else re-chunked.

Usage: BENCH_API_KEY=... python -m bench.raw_passthrough PORT UPSTREAM_URL
"""

from __future__ import annotations

import asyncio
import collections
import os
import sys
from urllib.parse import urlsplit

import httptools
import uvloop

DROP = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"host", b"x-api-key"}
)


class Upstream(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.events: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
        self.headers: list[tuple[bytes, bytes]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.events.put_nowait(("head", (self.parser.get_status_code(), self.headers)))
        self.headers = []

    def on_body(self, body: bytes) -> None:
        self.events.put_nowait(("body", body))

    def on_message_complete(self) -> None:
        self.events.put_nowait(("end", None))


class Server(asyncio.Protocol):
    def __init__(self, host: str, port: int, api_key: bytes, pool: collections.deque[Upstream]):
        self.parser = httptools.HttpRequestParser(self)
        self.upstream = (host, port)
        self.host = f"{host}:{port}".encode()
        self.api_key = api_key
        self.pool = pool
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.url = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        body = b"".join(self.body)
        head = [b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (method, self.url, self.host)]
        head += [b"%s: %s\r\n" % h for h in self.headers if h[0].lower() not in DROP]
        head.append(b"x-api-key: %s\r\ncontent-length: %d\r\n\r\n" % (self.api_key, len(body)))
        self.headers, self.body, self.url = [], [], b""
        asyncio.get_running_loop().create_task(self.relay(b"".join(head) + body))

    async def relay(self, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        if self.pool:
            conn = self.pool.pop()
        else:
            _, conn = await loop.create_connection(Upstream, *self.upstream)
        assert conn.transport is not None
        assert self.transport is not None
        conn.transport.write(request)
        kind, value = await conn.events.get()
        status, headers = value  # type: ignore[misc]
        length = next((v for n, v in headers if n.lower() == b"content-length"), None)
        out = [b"HTTP/1.1 %d OK\r\n" % status]
        out += [b"%s: %s\r\n" % h for h in headers if h[0].lower() not in DROP]
        out.append(
            b"content-length: %s\r\n\r\n" % length
            if length is not None
            else b"transfer-encoding: chunked\r\n\r\n"
        )
        self.transport.write(b"".join(out))
        while True:
            kind, value = await conn.events.get()
            if kind == "end":
                break
            chunk: bytes = value  # type: ignore[assignment]
            self.transport.write(
                chunk if length is not None else b"%x\r\n%s\r\n" % (len(chunk), chunk)
            )
        if length is None:
            self.transport.write(b"0\r\n\r\n")
        self.pool.append(conn)


def main() -> None:
    port, upstream = int(sys.argv[1]), urlsplit(sys.argv[2])
    api_key = os.environ["BENCH_API_KEY"].encode()
    pool: collections.deque[Upstream] = collections.deque()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        host, up_port = upstream.hostname or "127.0.0.1", upstream.port or 80
        server = await loop.create_server(
            lambda: Server(host, up_port, api_key, pool), "127.0.0.1", port
        )
        await server.serve_forever()

    uvloop.run(run())


if __name__ == "__main__":
    main()
