"""The one place that talks to Anthropic: relay a call both ways, byte for byte.

No redirects are followed (a 3xx becomes a 502, so the sandbox never carries anything to
another origin); nothing is retried once bytes have left (the SDKs retry by themselves);
timeouts are per read, not per call, because generations stream for many minutes. Every
chunk is written to the client as it arrives, and only then shown to the meter, which
observes the call and never stands between the upstream and the client. An upstream cut
mid-response cuts the client too: it must see a failure, never a synthesised end. Header
values never go into an error or a log line.
"""

from __future__ import annotations

import asyncio

from proxy.errors import ProxyError
from proxy.headers import downstream_headers
from proxy.http.messages import BodyFraming, response_head
from proxy.http.response import ResponseCut
from proxy.keyring import SessionKey
from proxy.meter.recorder import CallRecorder
from proxy.reflection import BodyScrubber, scrub_headers
from proxy.transport import (
    WAIT,
    ClientGone,
    Downstream,
    Upstream,
    UpstreamConnection,
    UpstreamError,
)

STREAM_IDLE_TIMEOUT_S = 120.0  # Anthropic streams send ping events well within this
RESPONSE_TIMEOUT_S = 600.0  # a non-streamed reply may take as long as the SDKs wait
_EVENT_STREAM = b"text/event-stream"


def _zero(head: bytearray) -> None:
    if head[:1] != b"\0":  # not zeroed yet (a head starts with its method)
        head[:] = bytes(len(head))


async def forward(
    call: Downstream,
    upstream: Upstream,
    head: bytearray,
    body: bytes,
    *,
    stream: bool,
    recorder: CallRecorder,
    key: SessionKey,
) -> None:
    """Send `head` (which holds the key; zeroed here once sent) and `body` upstream and
    relay the answer to `call`, with any echo of `key` overwritten. Raises ProxyError when
    the client can still be answered."""
    try:
        conn = await upstream.connect()
    except (UpstreamError, TimeoutError) as exc:
        _zero(head)
        recorder.on_end(error_type="upstream_unavailable", status=502)
        raise ProxyError(502, "api_error", f"upstream unavailable ({exc})") from None
    reusable = False
    try:
        conn.send(head, body)
        recorder.on_request_sent()
        reusable = await _relay(call, conn, head, stream, recorder, key)
    except asyncio.CancelledError:
        # The client went away: dropping the upstream connection cancels the generation.
        recorder.on_end(error_type="client_aborted", status=499)
        raise
    except ClientGone:
        recorder.on_end(error_type="client_aborted", status=499)
    except TimeoutError:
        recorder.on_end(error_type="upstream_timeout", status=504)
        if call.started:
            call.abort()
        else:
            raise ProxyError(504, "api_error", "upstream did not answer in time") from None
    except (ResponseCut, UpstreamError, OSError) as exc:
        if call.started:
            recorder.on_end(error_type="client_aborted" if call.closed else "upstream_cut")
            call.abort()
        else:
            recorder.on_end(error_type="upstream_unavailable", status=502)
            raise ProxyError(502, "api_error", f"upstream unavailable ({exc})") from None
    finally:
        _zero(head)
        upstream.release(conn, reusable)


async def _relay(
    call: Downstream,
    conn: UpstreamConnection,
    head: bytearray,
    stream: bool,
    recorder: CallRecorder,
    key: SessionKey,
) -> bool:
    """Relay one response; True when the upstream connection can carry another call."""
    timeout = STREAM_IDLE_TIMEOUT_S if stream else RESPONSE_TIMEOUT_S
    answer = await conn.read_head(timeout)
    if conn.flushed:
        _zero(head)  # the upstream has answered: the key's bytes are with the kernel
    if 300 <= answer.status < 400:
        recorder.on_end(error_type="upstream_redirect", status=502)
        raise ProxyError(502, "api_error", "upstream answered with a redirect; not followed")
    headers, reflected = scrub_headers(downstream_headers(answer.headers), key)
    if reflected:
        recorder.on_key_reflected()
    request_id = answer.request_id
    recorder.on_response_start(
        answer.status,
        request_id.decode("latin-1") if request_id is not None else None,
        event_stream=answer.content_type.startswith(_EVENT_STREAM),
    )
    if answer.status in (204, 304):
        length: int | None = 0
    else:
        length = None if answer.chunked else answer.content_length
    framing = BodyFraming(length)
    # What has arrived goes out in one write (a short reply: head and body together); the
    # meter sees each chunk once the client has it.
    out = [
        response_head(
            answer.status,
            answer.reason,
            headers,
            content_length=length,
            keep_alive=call.will_keep_alive(),
        )
    ]
    await _relay_body(call, conn, framing, out, recorder, BodyScrubber(key), read_timeout_s=timeout)
    return True


async def _relay_body(
    call: Downstream,
    conn: UpstreamConnection,
    framing: BodyFraming,
    out: list[bytes],
    recorder: CallRecorder,
    scrubber: BodyScrubber,
    *,
    read_timeout_s: float,
) -> None:
    """Relay the body as it arrives, scrubbed, after what `out` holds (the head)."""
    sent: list[bytes] = []
    while True:
        chunk = conn.read_ready()
        if chunk is WAIT:
            _send(call, out, sent, recorder)
            await call.drain()
            chunk = await conn.read_chunk(read_timeout_s)
        if chunk is None:
            break
        if chunk:
            chunk = scrubber.feed(chunk)  # type: ignore[arg-type]
            if scrubber.hits == 1:  # the first: a cut stream is recorded with it too
                recorder.on_key_reflected()
            if chunk:
                out.append(framing.chunk(chunk))
                sent.append(chunk)
    held = scrubber.finish()
    if held:
        out.append(framing.chunk(held))
        sent.append(held)
    if scrubber.hits:
        recorder.on_key_reflected()  # a hit held back to the end
    out.append(framing.end())
    _send(call, out, sent, recorder)
    recorder.on_end()


def _send(call: Downstream, out: list[bytes], sent: list[bytes], recorder: CallRecorder) -> None:
    if out:
        call.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()
    for chunk in sent:
        recorder.on_chunk(chunk)
    sent.clear()
