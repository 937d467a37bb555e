"""The report page in a real browser: headless Chromium (Debian's `chromium`, which .ci/run
installs) opens a report link, the chart and the timeline rows are in the rendered DOM,
and a screenshot is kept as a CI artefact at var/report-page.png."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import service_missing
from tests.e2e.conftest import Stack
from tests.e2e.test_evidence import body, call

pytestmark = pytest.mark.process  # starts the service's own processes

CHROMIUM = os.environ.get("METRUX_TEST_CHROMIUM") or shutil.which("chromium")
ARTEFACT = Path(__file__).parents[2] / "var" / "report-page.png"
# Flags for a closed network and a root user, as the machine notes describe.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1500",
)


async def chromium(tmp_path: Path, *args: str) -> str:
    assert CHROMIUM is not None
    process = await asyncio.create_subprocess_exec(
        CHROMIUM,
        *FLAGS,
        f"--user-data-dir={tmp_path / 'profile'}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout=90)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0
    return out.decode()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_report_page_renders_its_chart_and_timeline_in_chromium(
    stack: Stack, tmp_path: Path
) -> None:
    if CHROMIUM is None:
        service_missing("Chromium", "install Debian's chromium package")
    for n in range(5):
        await call(stack, body(n, stream=n % 2 == 0))
    await stack.records()
    async with stack.control.post(
        f"/v1/sessions/{stack.session_id}/report-link", headers=stack.tenant.auth
    ) as r:
        link = (await r.json())["url"]
    url = str(stack.control.make_url("/" + link.split("://", 1)[1].split("/", 1)[1]))

    dom = await chromium(tmp_path, "--dump-dom", url)
    assert '<svg id="usage-chart"' in dom
    assert dom.count('<tr class="call') == 5
    assert 'id="total-calls">5 ' in dom

    ARTEFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTEFACT.unlink(missing_ok=True)
    await chromium(tmp_path, f"--screenshot={ARTEFACT}", url)
    assert ARTEFACT.stat().st_size > 10_000
