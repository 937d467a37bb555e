"""The aiohttp patch fires on a real request and zeroes the header block that carried the
key, without root (tests/security/test_key_memory.py checks the whole live process)."""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from core.settings import Settings
from proxy import aiohttp_patch
from proxy.cli import run_proxy
from tests.factories import fake_anthropic_key


async def test_the_block_carrying_the_key_is_kept_sent_whole_and_zeroed(
    aiohttp_server: Any,
) -> None:
    aiohttp_patch.install()
    assert aiohttp_patch.installed()
    seen: list[str] = []

    async def upstream(request: web.Request) -> web.Response:
        seen.append(request.headers.get("x-api-key", ""))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/v1/messages", upstream)
    server = await aiohttp_server(app)
    key = fake_anthropic_key()
    async with aiohttp.ClientSession() as client:
        with aiohttp_patch.wiping_header_blocks():
            async with client.post(
                server.make_url("/v1/messages"), data=b"{}", headers={"x-api-key": key}
            ) as r:
                assert await r.text() == "ok"
            [block] = aiohttp_patch.kept_blocks()
            assert key.encode() in block  # the hook fired on the block that holds the key
        # Outside the block: the same object, every byte zero.
        assert block == bytes(len(block))
        # A request without the key is left alone.
        with aiohttp_patch.wiping_header_blocks():
            async with client.post(server.make_url("/v1/messages"), data=b"{}") as r:
                assert r.status == 200
            assert aiohttp_patch.kept_blocks() == []
    assert seen[0] == key  # the upstream got the header intact: the patch broke nothing


def test_installing_twice_wraps_once() -> None:
    aiohttp_patch.install()
    first = aiohttp.http_writer._serialize_headers
    aiohttp_patch.install()
    assert aiohttp.http_writer._serialize_headers is first
    assert not hasattr(first.__wrapped__, "__wrapped__")  # type: ignore[attr-defined]


def test_the_proxy_refuses_to_start_without_the_patch(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def unavailable() -> None:
        raise aiohttp_patch.PatchUnavailable("this aiohttp lacks _serialize_headers")

    monkeypatch.setattr(aiohttp_patch, "install", unavailable)
    args = argparse.Namespace(
        listen="127.0.0.1:0", metrics_listen=None, bootstrap_token_file=None, upstream=None,
        session="s", control_url="http://127.0.0.1:9", keepalive_grace=0.0,
    )  # fmt: skip
    assert run_proxy(args, Settings(bootstrap_token="mxb_" + "x" * 43)) == 1
    assert "lacks _serialize_headers" in capsys.readouterr().err
