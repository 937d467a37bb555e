"""Session evidence end to end: the chain the proxy builds, its seal, a customer's
transcript checked against it, cut streams and retries in the record, and the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from core.cli import main
from core.crypto.sealing import Recipient
from sandbox.standin import (
    MODEL,
    USAGE,
    JsonReply,
    StreamReply,
    encode_event,
    error_body,
    stream_events,
)
from tests.e2e.conftest import Stack
from tests.factories import METRICS_AUTH, bearer, make_tenant


async def call(stack: Stack, body: dict[str, Any]) -> tuple[bytes, int, bytes]:
    """One call to the proxy as raw bytes, as a customer logging the wire would keep it."""
    request = json.dumps(body).encode()
    async with aiohttp.ClientSession() as http:
        try:
            async with http.post(
                f"{stack.proxy_url}/v1/messages",
                data=request,
                headers={
                    "x-api-key": stack.sandbox_token,
                    "anthropic-version": "2023-06-01",
                    "content-type": "application/json",
                },
            ) as r:
                return request, r.status, await r.read()
        except aiohttp.ClientPayloadError:
            return request, 200, b""


def body(n: int, *, stream: bool = False) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 16,
        "stream": stream,
        "messages": [{"role": "user", "content": f"question {n}"}],
    }


async def get_json(stack: Stack, path: str) -> Any:
    async with stack.control.get(path, headers=stack.tenant.auth) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def test_the_chain_verifies_a_faithful_transcript_and_pinpoints_a_tampered_one(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    transcript = [await call(stack, body(n, stream=n % 2 == 1)) for n in range(4)]
    records = await stack.records()
    assert [r["chain_seq"] for r in records] == [1, 2, 3, 4]

    async with stack.control.post(
        f"/v1/sessions/{stack.session_id}/submit", headers=bearer(stack.sandbox_token)
    ) as r:
        assert r.status == 200
    async with stack.control.post(
        f"/v1/sessions/{stack.session_id}/grading-complete", headers=stack.tenant.auth
    ) as r:
        assert r.status == 200
    digest = await get_json(stack, f"/v1/sessions/{stack.session_id}/digest")
    assert (digest["calls"], digest["intact"], digest["seal_matches"]) == (4, True, True)
    assert digest["seal"]["final_link"] == digest["final_link"] == records[-1]["chain_link"]

    digest_file = tmp_path / "digest.json"
    digest_file.write_text(json.dumps(digest))
    lines = [
        {"request": request.decode(), "response": response.decode()}
        for request, _, response in transcript
    ]
    faithful = tmp_path / "faithful.jsonl"
    faithful.write_text("".join(json.dumps(line) + "\n" for line in lines))
    argv = ["verify-transcript", "--session", stack.session_id, "--digest", str(digest_file)]
    assert main([*argv, str(faithful)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "VERIFIED"

    lines[2]["response"] = lines[2]["response"].replace("fake", "FAKE")
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert main([*argv, str(tampered)]) == 1
    out = capsys.readouterr().out
    assert "call 3: response differs" in out
    assert "first differing call: 3" in out
    assert out.splitlines()[-1] == "NOT VERIFIED"


async def test_a_new_proxy_continues_the_chain_where_the_last_left_it(stack: Stack) -> None:
    await call(stack, body(1))
    [first] = await stack.records()
    async with stack.control.post(
        f"/v1/sessions/{stack.session_id}/bootstrap-token", headers=stack.tenant.auth
    ) as r:
        bootstrap = (await r.json())["bootstrap_token"]
    async with stack.control.post(
        f"/internal/v1/sessions/{stack.session_id}/attach",
        json=Recipient().as_json(),
        headers=bearer(bootstrap),
    ) as r:
        grant = await r.json()
    assert grant["chain_head"] == {"seq": 1, "link": first["chain_link"]}


@pytest.mark.parametrize("mid_event", [False, True])
async def test_a_stream_cut_anywhere_is_recorded_incomplete_with_the_tokens_seen(
    stack: Stack, mid_event: bool
) -> None:
    events = stream_events()
    sizes = [len(encode_event(name, data)) for name, data in events]
    cuts = range(1, len(events))  # after each event but the last: never a complete stream
    for n in cuts:
        if mid_event:
            stack.fake.enqueue(StreamReply(cut_at_byte=sum(sizes[: n - 1]) + sizes[n - 1] // 2))
        else:
            stack.fake.enqueue(StreamReply(cut_after=n))
        await call(stack, body(n, stream=True))
    records = await stack.records()
    assert len(records) == len(cuts)
    for n, record in zip(cuts, records, strict=True):
        seen = n - 1 if mid_event else n  # events wholly delivered before the cut
        assert record["complete"] is False, n
        assert record["http_status"] == 200
        assert record["error_type"] == "upstream_cut"
        # message_start carries the input side; output comes from the last delta seen.
        if seen >= 1:
            assert record["input_tokens"] == USAGE["input_tokens"], n
            assert record["cache_read_input_tokens"] == USAGE["cache_read_input_tokens"]
        else:
            assert record["input_tokens"] is None, n
        delta_seen = any(name == "message_delta" for name, _ in events[:seen])
        expected_output = USAGE["output_tokens"] if delta_seen else (1 if seen >= 1 else None)
        assert record["output_tokens"] == expected_output, n


async def test_a_retry_is_its_own_record_and_the_summary_counts_each_call_once(
    stack: Stack,
) -> None:
    stack.fake.enqueue(JsonReply(status=529, body=error_body("overloaded_error", "Overloaded")))
    request = body(1)
    first = await call(stack, request)
    second = await call(stack, request)
    assert (first[1], second[1]) == (529, 200)
    records = await stack.records()
    assert [r["http_status"] for r in records] == [529, 200]
    summary = await get_json(stack, f"/v1/sessions/{stack.session_id}/usage/summary")
    assert summary["calls"] == 2
    report = await get_json(stack, f"/v1/sessions/{stack.session_id}/report")
    assert [c["retry"] for c in report["calls"]] == [False, True]
    assert report["totals"]["tokens"]["input"] == USAGE["input_tokens"]  # only the success
    assert report["totals"]["retries"] == 1
    # The usage object is kept exactly as Anthropic sent it.
    assert report["calls"][1]["usage"] == USAGE


async def test_report_json_csv_and_page_with_its_link(stack: Stack) -> None:
    for n in range(3):
        await call(stack, body(n, stream=n == 1))
    await stack.records()
    report = await get_json(stack, f"/v1/sessions/{stack.session_id}/report")
    assert report["totals"]["calls"] == 3
    async with stack.control.get("/metrics", headers=METRICS_AUTH) as r:
        assert "metrux_usage_records_ingested_total 3.0" in await r.text()
    assert report["prices"]["version"]
    assert report["totals"]["cost"] != "0.000000"  # the fake's model is priced
    assert {e["action"] for e in report["key_events"]} >= {"session:create", "key:unwrap"}
    async with stack.control.get(
        f"/v1/sessions/{stack.session_id}/report.csv", headers=stack.tenant.auth
    ) as r:
        assert r.content_type == "text/csv"
        assert len((await r.text()).splitlines()) == 4

    async with stack.control.post(
        f"/v1/sessions/{stack.session_id}/report-link", headers=stack.tenant.auth
    ) as r:
        assert r.status == 201
        link = (await r.json())["url"]
    path = link.split("://", 1)[1].split("/", 1)[1]
    async with stack.control.get("/" + path, allow_redirects=False) as r:
        assert r.status == 303
        assert r.headers["Location"] == f"/sessions/{stack.session_id}"  # the token is gone
        cookie = r.cookies["mx_report"]
        assert cookie["httponly"]
        assert cookie["samesite"] == "Strict"
    async with stack.control.get(f"/sessions/{stack.session_id}") as r:
        assert r.status == 200
        page = await r.text()
        assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    assert page.count('<tr class="call') == 3
    assert 'id="usage-chart"' in page
    assert "<script" not in page

    stack.control.session.cookie_jar.clear()
    async with stack.control.get(f"/sessions/{stack.session_id}") as r:
        assert r.status == 401
    async with stack.control.get(f"/sessions/{stack.session_id}?access=mxr_forged") as r:
        assert r.status == 401
    async with stack.control.get(f"/sessions/{stack.session_id}", headers=stack.tenant.auth) as r:
        assert r.status == 200  # a member token works too
    other = await make_tenant(stack.engine, "Other")
    async with stack.control.get(f"/sessions/{stack.session_id}", headers=other.auth) as r:
        assert r.status == 404
