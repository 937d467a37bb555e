"""Claude Code as the sandbox's COMMAND, when it is installed (METRUX_TEST_CLAUDE points at
the `claude` binary; the npm package @anthropic-ai/claude-code provides it)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from core.settings import Settings
from tests.e2e.test_sandbox import METRUX, _prepare, _records

CLAUDE = os.environ.get("METRUX_TEST_CLAUDE") or shutil.which("claude")

# Starts the service's own processes.
pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(CLAUDE is None, reason="Claude Code is not installed"),
]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_claude_code_runs_headless_through_the_proxy(
    aiohttp_server: Any, settings: Settings, engine: AsyncEngine, tmp_path: Path
) -> None:
    run = await _prepare(aiohttp_server, settings, engine, tmp_path)
    launcher = await asyncio.create_subprocess_exec(
        METRUX, "sandbox", "run", "--session-credentials", str(run["credentials"]), "--same-user",
        "--", str(CLAUDE), "-p", "say hi", "--output-format", "json",
        env=run["env"], stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(launcher.communicate(), 120)
    assert launcher.returncode == 0, (stdout + stderr).decode()[-3000:]
    result = json.loads(stdout)
    assert result["is_error"] is False
    assert "Hello from the fake." in result["result"]
    assert run["fake"].requests, "Claude Code made no call through the proxy"
    assert all(r.headers["x-api-key"] == run["api_key"] for r in run["fake"].requests)
    assert {r.path_qs for r in run["fake"].requests} == {"/v1/messages?beta=true"}
    assert all(r.headers["user-agent"].startswith("claude-cli/") for r in run["fake"].requests)
    records = await _records(settings, engine, run["created"]["id"])
    assert len(records) == len(run["fake"].requests)
