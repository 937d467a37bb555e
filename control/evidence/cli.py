"""`metrux verify-transcript`: check a transcript the customer holds against a session's
digest chain.

The transcript is JSON lines, one per call in the order the calls were made:
`{"request": "<body as sent>", "response": "<body as received>"}`; a stream's response is
the whole SSE text. Use `request_b64` / `response_b64` instead for bytes that are not UTF-8.
The chain comes from `--digest FILE` (a saved GET /v1/sessions/{id}/digest) or from the
control plane at `--control-url`, with a member token in METRUX_API_TOKEN.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.settings import Settings

if TYPE_CHECKING:
    from control.evidence.chain import TranscriptCheck


def register(parts: Any) -> None:
    cmd = parts.add_parser(
        "verify-transcript", help="check a session transcript against its digest chain"
    )
    cmd.add_argument("--session", required=True, help="the session id")
    source = cmd.add_mutually_exclusive_group(required=True)
    source.add_argument("--digest", type=Path, help="the session's digest document (JSON)")
    source.add_argument("--control-url", help="fetch it (member token in METRUX_API_TOKEN)")
    cmd.add_argument("transcript", type=Path, help="JSON lines: request and response bodies")
    cmd.set_defaults(handler=run_verify)


def _body(line: dict[str, Any], name: str) -> bytes:
    if f"{name}_b64" in line:
        return base64.b64decode(line[f"{name}_b64"], validate=True)
    value = line.get(name)
    if isinstance(value, dict | list):  # a parsed body: its bytes are not known
        raise ValueError(f"{name} must be the body text as sent, not parsed JSON")
    return (value or "").encode("utf-8")


def read_transcript(path: Path) -> list[tuple[bytes, bytes]]:
    calls = []
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
            calls.append((_body(line, "request"), _body(line, "response")))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: {exc}") from None
    return calls


def _fetch_digest(control_url: str, session_id: str) -> dict[str, Any]:
    import asyncio

    import aiohttp

    token = os.environ.get("METRUX_API_TOKEN", "")
    if not token:
        raise ValueError("set METRUX_API_TOKEN to a member token (mxk_…)")

    async def go() -> dict[str, Any]:
        url = f"{control_url.rstrip('/')}/v1/sessions/{session_id}/digest"
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
            http.get(url, headers={"Authorization": f"Bearer {token}"}) as response,
        ):
            body = await response.json(content_type=None)
            if response.status != 200:
                message = (body.get("error") or {}).get("message", response.reason)
                raise ValueError(f"{response.status}: {message}")
            return body

    return asyncio.run(go())


def _findings(check: TranscriptCheck) -> Iterator[str]:
    """What the check found, one line each: every call's verdict, then what differs."""
    for verdict in check.verdicts:
        parts = []
        if not verdict.request_matches:
            parts.append("request differs")
        if not verdict.response_matches:
            parts.append("response differs")
        yield f"call {verdict.seq}: {'matches' if verdict.matches else ', '.join(parts)}"
    if check.missing:
        yield f"the transcript lacks the last {check.missing} recorded calls"
    if check.extra:
        yield f"the transcript has {check.extra} calls that were never recorded"
    for problem in check.chain.problems:
        yield f"chain: {problem}"
    if check.sealed_link_matches is False:
        yield "seal: the sealed link does not match the chain"
    if check.first_mismatch is not None:
        yield f"first differing call: {check.first_mismatch}"


def run_verify(args: argparse.Namespace, settings: Settings) -> int:
    from control.evidence.chain import verify_transcript

    try:
        calls = read_transcript(args.transcript)
        if args.digest is not None:
            digest = json.loads(args.digest.read_text())
        else:
            digest = _fetch_digest(args.control_url, args.session)
    except (OSError, ValueError) as exc:
        print(f"metrux: {exc}", file=sys.stderr)
        return 2
    if digest.get("session_id") != args.session:
        print("metrux: the digest is for another session", file=sys.stderr)
        return 2
    check = verify_transcript(digest, calls)
    for line in _findings(check):
        print(line)
    print("VERIFIED" if check.ok else "NOT VERIFIED")
    return 0 if check.ok else 1
