"""The demo's stand-in is the tests' fake, labelled: users can always tell it is not Claude."""

from __future__ import annotations

from typing import Any

from sandbox.standin import STANDIN_PIECES, FakeAnthropic


async def test_the_demo_standin_labels_every_answer_and_accepts_any_key(
    aiohttp_client: Any,
) -> None:
    fake = FakeAnthropic(None, stream_pieces=STANDIN_PIECES, record=False, label="metrux-demo")
    http = await aiohttp_client(fake.app)
    body = {"model": "claude-sonnet-5-5", "max_tokens": 10, "messages": []}

    async with http.post("/v1/messages", json=body, headers={"x-api-key": "any"}) as r:
        assert r.status == 200
        assert r.headers["x-standin"] == "metrux-demo"
        assert (await r.json())["content"][0]["text"] == "".join(STANDIN_PIECES)
    async with http.post(
        "/v1/messages", json={**body, "stream": True}, headers={"x-api-key": "other"}
    ) as r:
        assert r.headers["x-standin"] == "metrux-demo"
        text = await r.text()
        assert all(f'"text":"{piece}"' in text for piece in STANDIN_PIECES)
    async with http.post("/v1/messages", json=body) as r:  # no key at all
        assert r.status == 401
        assert r.headers["x-standin"] == "metrux-demo"
    assert fake.requests == []  # the stand-in keeps nothing per request
