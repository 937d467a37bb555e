"""The one place that talks to Anthropic: relay a call both ways, byte for byte.

No redirects are followed (a 3xx becomes a 502, so the sandbox never carries anything to
another origin); nothing is retried once bytes have left (the SDKs retry by themselves);
timeouts are per read, not per call, because generations stream for many minutes. SSE
chunks are written to the client as they arrive. An upstream cut mid-stream cuts the client
too: it must see a failure, never a synthesised end. Header values never go into an error
or a log line.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from proxy.aiohttp_patch import wiping_header_blocks
from proxy.errors import ProxyError
from proxy.headers import downstream_headers, upstream_headers
from proxy.meter.recorder import CallRecorder

CONNECT_TIMEOUT_S = 10.0
STREAM_IDLE_TIMEOUT_S = 120.0  # Anthropic streams send ping events well within this
RESPONSE_TIMEOUT_S = 600.0  # a non-streamed reply may take as long as the SDKs wait


def _timeout(stream: bool) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(
        total=None,
        sock_connect=CONNECT_TIMEOUT_S,
        sock_read=STREAM_IDLE_TIMEOUT_S if stream else RESPONSE_TIMEOUT_S,
    )


async def forward(
    request: web.Request,
    *,
    client: aiohttp.ClientSession,
    upstream_url: str,
    api_key: str,
    body: bytes,
    stream: bool,
    recorder: CallRecorder,
    allowed_betas: frozenset[str] | None = None,
) -> web.StreamResponse:
    headers = upstream_headers(request.headers.items(), api_key, allowed_betas)
    try:
        with wiping_header_blocks():
            return await _exchange(request, client, upstream_url, headers, body, stream, recorder)
    except asyncio.CancelledError:
        # The client went away (aiohttp cancels the handler): leaving the `async with`
        # closes the upstream connection, which cancels the generation there.
        recorder.on_end(error_type="client_aborted", status=499)
        raise
    except TimeoutError:
        recorder.on_end(error_type="upstream_timeout", status=504)
        raise ProxyError(504, "api_error", "upstream did not answer in time") from None
    except aiohttp.ClientError as exc:
        recorder.on_end(error_type="upstream_unavailable", status=502)
        raise ProxyError(502, "api_error", f"upstream unavailable ({type(exc).__name__})") from None


async def _exchange(
    request: web.Request,
    client: aiohttp.ClientSession,
    upstream_url: str,
    headers: CIMultiDict[str],
    body: bytes,
    stream: bool,
    recorder: CallRecorder,
) -> web.StreamResponse:
    async with client.request(
        request.method,
        upstream_url + request.path_qs,
        data=body or None,
        headers=headers,
        allow_redirects=False,
        timeout=_timeout(stream),
    ) as upstream:
        if 300 <= upstream.status < 400:
            recorder.on_end(error_type="upstream_redirect", status=502)
            raise ProxyError(502, "api_error", "upstream answered with a redirect; not followed")
        recorder.on_response_start(upstream.status, upstream.headers)
        out_headers = downstream_headers(upstream.headers.items())
        if not upstream.headers.get("content-type", "").startswith("text/event-stream"):
            payload = await upstream.read()
            response = web.Response(
                status=upstream.status,
                reason=upstream.reason,
                body=payload,
                headers=out_headers,
            )
            # Answer first, meter after: the record costs the client no latency.
            await response.prepare(request)
            await response.write_eof()
            recorder.on_chunk(payload)
            recorder.on_end()
            return response
        response = web.StreamResponse(
            status=upstream.status, reason=upstream.reason, headers=out_headers
        )
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
                recorder.on_chunk(chunk)
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as exc:
            # The upstream broke mid-stream (or the client vanished, which aiohttp reports
            # as a connection error on write). Either way the client must not see a clean
            # end of stream: drop its connection.
            client_gone = request.transport is None or request.transport.is_closing()
            recorder.on_end(error_type="client_aborted" if client_gone else _cut_kind(exc))
            if request.transport is not None:
                request.transport.abort()
            return response
        recorder.on_end()
        await response.write_eof()
        return response


def _cut_kind(exc: BaseException) -> str:
    return "upstream_timeout" if isinstance(exc, TimeoutError) else "upstream_cut"
