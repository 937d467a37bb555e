"""The key's lifetime and the session's limits, seen from the sandbox."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json

import aiohttp
import anthropic
import pytest

from control.sessions import proxy_link
from control.sessions import store as session_store
from control.sessions.lifecycle import SessionState
from proxy.limits import TokenBucket
from sandbox.standin import MODEL, JsonReply, StreamReply
from tests.e2e.conftest import Stack

PROMPT = [{"role": "user", "content": "hi"}]


async def stopped(stack: Stack) -> str | None:
    await asyncio.wait_for(stack.proxy.stopped.wait(), timeout=5)
    return stack.proxy.stop_reason


async def submit(stack: Stack) -> None:
    """The candidate submits; the proxy retires the candidate's token."""
    async with stack.control.post(
        f"/v1/sessions/{stack.session_id}/submit",
        headers={"Authorization": f"Bearer {stack.sandbox_token}"},
    ) as r:
        assert (r.status, (await r.json())["state"]) == (200, "submitted")
    await asyncio.wait_for(stack.proxy.candidate_retired.wait(), 5)


@pytest.mark.parametrize(
    ("path", "reason"),
    [("end", "signal_end"), ("grading-complete", "signal_grading_complete")],
)
async def test_control_plane_transition_clears_the_key(
    stack: Stack, path: str, reason: str
) -> None:
    await stack.sdk().messages.create(model=MODEL, max_tokens=8, messages=PROMPT)
    if path == "grading-complete":  # only a submitted session is graded
        await submit(stack)
    async with stack.control.post(
        f"/v1/sessions/{stack.session_id}/{path}", headers=stack.tenant.auth
    ) as r:
        assert r.status == 200
    assert await stopped(stack) == reason
    assert stack.proxy.key.buffer_is_zeroed()
    with pytest.raises(anthropic.PermissionDeniedError):
        await stack.sdk().messages.create(model=MODEL, max_tokens=8, messages=PROMPT)
    assert len(stack.fake.requests) == 1


async def test_revoking_the_key_clears_the_proxy(stack: Stack) -> None:
    async with stack.control.delete(f"/v1/keys/{stack.key_id}", headers=stack.tenant.auth) as r:
        assert r.status == 200
    assert await stopped(stack) == "signal_revoke"
    async with stack.control.get(
        f"/v1/sessions/{stack.session_id}", headers=stack.tenant.auth
    ) as r:
        assert (await r.json())["state"] == "revoked"


@pytest.fixture
def quick_reread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proxy_link, "STATE_REREAD_S", 0.2)


@pytest.mark.usefixtures("quick_reread")
async def test_a_missed_signal_is_obeyed_from_the_periodic_state_read(stack: Stack) -> None:
    """Nothing is published: the signal stream finds the ended state on its next re-read."""
    async with stack.engine.begin() as conn:
        await session_store.set_state(
            conn, stack.session_id, SessionState.ENDED, now=dt.datetime.now(dt.UTC)
        )
    assert await stopped(stack) == "session_ended"


async def test_sandbox_disconnect_needs_the_session_token(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{stack.proxy_url}/_proxy/disconnect", headers={"x-api-key": "mxs_wrong"}
        ) as r:
            assert r.status == 401
        assert not stack.proxy.stopped.is_set()
        async with http.post(
            f"{stack.proxy_url}/_proxy/disconnect",
            headers={"Authorization": f"Bearer {stack.sandbox_token}"},
        ) as r:
            assert (r.status, await r.json()) == (200, {"status": "cleared"})
    assert stack.proxy.stop_reason == "sandbox_disconnect"
    assert stack.proxy.key.buffer_is_zeroed()


async def test_proxy_shows_online_while_running(stack: Stack) -> None:
    await stack.proxy.idle.wait()
    for _ in range(50):  # the poller writes the liveness key within one interval
        if await stack.redis.exists(stack.names.liveness_key(stack.session_id)):
            break
        await asyncio.sleep(0.05)
    async with stack.control.get(
        f"/v1/sessions/{stack.session_id}", headers=stack.tenant.auth
    ) as r:
        body = await r.json()
    assert (body["state"], body["proxy_online"]) == ("active", True)


@pytest.mark.parametrize("stack", [{"max_requests": 2}], indirect=True)
async def test_max_requests(stack: Stack) -> None:
    client = stack.sdk()
    for _ in range(2):
        await client.messages.create(model=MODEL, max_tokens=8, messages=PROMPT)
    await client.messages.count_tokens(model=MODEL, messages=PROMPT)  # not a generation
    with pytest.raises(anthropic.PermissionDeniedError, match="request limit"):
        await client.messages.create(model=MODEL, max_tokens=8, messages=PROMPT)
    assert len(stack.fake.requests) == 3


@pytest.mark.parametrize("stack", [{"allowed_models": ["claude-haiku-4-5"]}], indirect=True)
async def test_allowed_models(stack: Stack) -> None:
    client = stack.sdk()
    await client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=PROMPT)
    with pytest.raises(anthropic.PermissionDeniedError, match="not allowed"):
        await client.messages.create(model=MODEL, max_tokens=8, messages=PROMPT)
    with pytest.raises(anthropic.PermissionDeniedError):
        await client.messages.count_tokens(model=MODEL, messages=PROMPT)
    assert len(stack.fake.requests) == 1


@pytest.mark.parametrize("stack", [{"max_output_tokens": 100}], indirect=True)
async def test_output_budget_is_reserved_then_settled(stack: Stack) -> None:
    client = stack.sdk()
    await client.messages.create(model=MODEL, max_tokens=64, messages=PROMPT)  # uses 12
    await stack.proxy.idle.wait()  # settled once the handler has metered the call
    assert (stack.proxy.budget.output_used, stack.proxy.budget.output_reserved) == (12, 0)
    # Two concurrent calls of 60 would overshoot the 88 left: exactly one is refused.
    # (The upstream answers slowly, so both are in flight together.)
    stack.fake.enqueue(JsonReply(delay=0.3), JsonReply(delay=0.3))
    results = await asyncio.gather(
        client.messages.create(model=MODEL, max_tokens=60, messages=PROMPT),
        client.messages.create(model=MODEL, max_tokens=60, messages=PROMPT),
        return_exceptions=True,
    )
    await stack.proxy.idle.wait()
    refused = [r for r in results if isinstance(r, anthropic.PermissionDeniedError)]
    assert len(refused) == 1
    assert "output-token budget" in refused[0].body["error"]["message"]
    assert stack.proxy.budget.output_used == 24


async def test_request_rate_limit_is_a_marked_429(stack: Stack) -> None:
    stack.proxy.rate = TokenBucket(rate_per_s=0.5, burst=2)
    client = stack.sdk()
    for _ in range(2):
        await client.messages.count_tokens(model=MODEL, messages=PROMPT)
    with pytest.raises(anthropic.RateLimitError) as caught:
        await client.messages.count_tokens(model=MODEL, messages=PROMPT)
    headers = caught.value.response.headers
    assert int(headers["retry-after"]) >= 1
    assert headers["x-metrux-proxy-error"] == "1"
    assert len(stack.fake.requests) == 2


async def test_claude_code_startup_burst_with_a_good_token_is_never_throttled(stack: Stack) -> None:
    """Claude Code's /context makes ~26 count_tokens calls at once; 40 all pass."""
    client = stack.sdk()
    results = await asyncio.gather(
        *[client.messages.count_tokens(model=MODEL, messages=PROMPT) for _ in range(40)]
    )
    assert len(results) == 40


async def test_repeated_bad_tokens_lock_the_source_out_but_not_the_right_token(
    stack: Stack,
) -> None:
    async with aiohttp.ClientSession() as http:
        statuses = []
        for n in range(25):
            async with http.get(
                f"{stack.proxy_url}/v1/models", headers={"x-api-key": f"mxs_guess{n:040d}"}
            ) as r:
                statuses.append(r.status)
                body = await r.text()
                assert f"guess{n:040d}" not in body
        assert statuses[:19] == [401] * 19
        assert statuses[19:] == [429] * 6
        async with http.get(
            f"{stack.proxy_url}/v1/models", headers={"x-api-key": stack.sandbox_token}
        ) as r:
            assert r.status == 200


async def test_the_key_never_leaves_the_proxy(stack: Stack, log_output) -> None:  # type: ignore[no-untyped-def]
    """After calls, errors, a cut and a clear, the key is in no log line, usage record,
    Redis entry or response the sandbox saw."""
    client = stack.sdk()
    seen: list[str] = []
    stack.fake.enqueue(
        JsonReply(
            status=500, body={"type": "error", "error": {"type": "api_error", "message": "boom"}}
        )
    )
    for call in (
        lambda: client.messages.create(model=MODEL, max_tokens=8, messages=PROMPT),
        lambda: client.messages.create(model=MODEL, max_tokens=8, messages=PROMPT),
        lambda: client.models.list(),
    ):
        try:
            result = await call()
            seen.append(repr(result))
        except anthropic.APIError as exc:
            seen.append(repr(exc) + json.dumps(getattr(exc, "body", None)))
    stack.fake.enqueue(StreamReply(cut_after=3))
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{stack.proxy_url}/v1/messages",
            json={"model": MODEL, "max_tokens": 8, "messages": PROMPT, "stream": True},
            headers={"x-api-key": stack.sandbox_token},
        ) as r,
    ):
        seen.append(str(dict(r.headers)))
        with contextlib.suppress(aiohttp.ClientPayloadError):
            seen.append((await r.read()).decode())
    records = await stack.records()
    stack.proxy.clear("test")
    entries = await stack.redis.xrange(stack.names.usage_stream)
    redis_dump = repr(entries) + repr(
        [
            await stack.redis.get(k)
            async for k in stack.redis.scan_iter(match=f"{stack.settings.redis_prefix}*")
            if await stack.redis.type(k) == b"string"
        ]
    )
    haystacks = {
        "logs": log_output.getvalue(),
        "records": repr(records),
        "redis": redis_dump,
        "responses": "".join(seen),
    }
    assert len(records) == 4
    for name, text in haystacks.items():
        for piece in (stack.api_key, stack.api_key[20:40], stack.api_key[-16:]):
            assert piece not in text, name


async def test_after_submit_only_the_grader_works_until_grading_completes(stack: Stack) -> None:
    await stack.sdk().messages.create(model=MODEL, max_tokens=8, messages=PROMPT)
    await submit(stack)
    with pytest.raises(anthropic.PermissionDeniedError, match="only the grader"):
        await stack.sdk().messages.create(model=MODEL, max_tokens=8, messages=PROMPT)
    grader = stack.sdk(api_key=stack.grader_token)
    await grader.messages.create(model=MODEL, max_tokens=8, messages=PROMPT)
    async with stack.control.post(
        f"/v1/sessions/{stack.session_id}/grading-complete", headers=stack.tenant.auth
    ):
        pass
    assert await stopped(stack) == "signal_grading_complete"
    with pytest.raises(anthropic.PermissionDeniedError):
        await grader.messages.create(model=MODEL, max_tokens=8, messages=PROMPT)
    assert [r["actor"] for r in await stack.records()] == ["candidate", "grader"]


async def test_submit_needs_the_candidates_own_token(stack: Stack) -> None:
    for token in (stack.grader_token, "mxs_" + "x" * 43):
        async with stack.control.post(
            f"/v1/sessions/{stack.session_id}/submit", headers={"Authorization": f"Bearer {token}"}
        ) as r:
            assert r.status == 401
    assert stack.proxy.candidate_enabled
