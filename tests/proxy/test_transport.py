"""The proxy's upstream side on real sockets: TLS verified with SNI, keep-alive pooling,
per-read timeouts, and heads that are zeroed once sent."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proxy.transport import HttpClient, Upstream, UpstreamError
from tests.factories import FakeSecret


def _certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1: (cert, key) files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "metrux test upstream")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class Origin:
    """An aiohttp server that counts connections and shows what it was sent."""

    def __init__(self) -> None:
        self.peers: set[Any] = set()
        self.seen: list[dict[str, str]] = []
        self.release = asyncio.Event()
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/slow", self.slow)
        self.app = app

    async def models(self, request: web.Request) -> web.Response:
        self.peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        self.seen.append(dict(request.headers))
        return web.json_response({"data": []})

    async def slow(self, request: web.Request) -> web.Response:
        await self.release.wait()
        return web.Response()


async def _serve(origin: Origin, context: ssl.SSLContext | None = None) -> tuple[Any, int]:
    runner = web.AppRunner(origin.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    return runner, runner.addresses[0][1]


async def test_https_upstream_is_verified_with_sni_and_http_1_1(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    origin = Origin()
    seen_sni: list[str | None] = []
    server_context.sni_callback = lambda sock, name, ctx: seen_sni.append(name)  # type: ignore[assignment,func-returns-value]
    runner, port = await _serve(origin, server_context)
    try:
        trusting = ssl.create_default_context(cafile=str(cert))
        http = HttpClient(f"https://localhost:{port}", ssl_context=trusting)
        async with await http.request("GET", "/v1/models", read_timeout=10) as response:
            assert response.status == 200
            assert await response.json() == {"data": []}
        await http.close()
        assert seen_sni == ["localhost"]
        assert origin.seen[0]["Host"] == f"localhost:{port}"

        # The system's trust store does not know this certificate: no call is made.
        untrusting = HttpClient(f"https://localhost:{port}")
        with pytest.raises(UpstreamError, match="SSLCertVerificationError"):
            await untrusting.request("GET", "/v1/models", read_timeout=10)
        await untrusting.close()
        assert len(origin.seen) == 1
    finally:
        await runner.cleanup()


@pytest.fixture
async def plain() -> AsyncIterator[tuple[Origin, str]]:
    """An origin over plain HTTP, and its URL."""
    origin = Origin()
    runner, port = await _serve(origin)
    yield origin, f"http://127.0.0.1:{port}"
    origin.release.set()
    await runner.cleanup()


async def test_keep_alive_connections_are_pooled_and_reused(plain: tuple[Origin, str]) -> None:
    origin, url = plain
    http = HttpClient(url)
    for _ in range(5):
        async with await http.request("GET", "/v1/models", read_timeout=10) as response:
            await response.read()
    await http.close()
    assert len(origin.seen) == 5
    assert len(origin.peers) == 1  # one connection carried all five


async def test_a_read_that_waits_too_long_times_out_and_the_connection_is_dropped(
    plain: tuple[Origin, str],
) -> None:
    _, url = plain
    http = HttpClient(url)
    with pytest.raises(TimeoutError):
        await http.request("GET", "/slow", read_timeout=0.2)
    assert http.upstream._idle == []  # a connection mid-response is never reused


async def test_a_sent_head_is_zeroed(plain: tuple[Origin, str]) -> None:
    origin, url = plain
    http = HttpClient(url)
    secret = bytearray(b"sk-ant-api03-secret")
    head = http.head("GET", "/v1/models", {}, 0, key=FakeSecret(secret))
    assert secret in head
    async with await http.send(head, read_timeout=10) as response:
        assert response.status == 200
    assert head == bytes(len(head))
    assert origin.seen[0]["x-api-key"] == secret.decode()
    await http.close()


async def test_an_unreachable_upstream_is_an_upstream_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(UpstreamError):
        await Upstream(f"http://127.0.0.1:{port}").connect()
