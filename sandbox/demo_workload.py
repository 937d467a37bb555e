"""The demo's candidate workload: a few Claude calls through ANTHROPIC_BASE_URL, as any
program speaking the Anthropic API would make them (raw HTTP, so no SDK is needed)."""

from __future__ import annotations

import asyncio
import os
import sys

import aiohttp

PROMPT = [{"role": "user", "content": "Explain what a BYOK proxy does, in one sentence."}]


async def main() -> int:
    base = os.environ["ANTHROPIC_BASE_URL"]
    headers = {"x-api-key": os.environ["ANTHROPIC_API_KEY"], "anthropic-version": "2023-06-01"}
    body = {"model": "claude-sonnet-5-5", "max_tokens": 64, "messages": PROMPT}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(
            f"{base}/v1/messages/count_tokens", json={"model": body["model"], "messages": PROMPT}
        ) as r:
            print(f"count_tokens -> {r.status} {await r.text()}")
        for n in range(2):
            async with http.post(f"{base}/v1/messages", json=body) as r:
                reply = await r.json()
                text = reply["content"][0]["text"] if r.status == 200 else reply
                print(f"messages #{n + 1} -> {r.status} {text}")
        async with http.post(f"{base}/v1/messages", json={**body, "stream": True}) as r:
            events = [line for line in (await r.text()).splitlines() if line.startswith("event:")]
            print(f"messages (stream) -> {r.status}, {len(events)} events")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
