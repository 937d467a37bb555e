"""Schemathesis against the control plane's own OpenAPI document, on a live `metrux
control serve` process: generated requests to every operation, as a member with a valid
token, must never cause a server error and must always answer in the API's error shape.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

from core.settings import Settings
from tests.e2e.processes import METRUX, free_port, metrux_env

# What these tests check depends on the database: they run on SQLite and PostgreSQL;
# they start the service's own processes.
pytestmark = [pytest.mark.both_databases, pytest.mark.process]

EXAMPLES = 12


@pytest.fixture
def live_control(settings: Settings, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A control-plane process with the guard relaxed for one busy client; yields its base
    URL and an owner token."""
    port = free_port()
    env = metrux_env(
        settings,
        METRUX_UPSTREAM_URL=settings.upstream_url,
        METRUX_RATE_LIMITS="token=100000/60,write=100000/60,read=100000/60",
        METRUX_BLOCK_ALLOWLIST="127.0.0.0/8",
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    created = subprocess.run(
        [METRUX, "control", "create-tenant", "Fuzz Co", "--owner-email", "o@fuzz.example"],
        env=env, capture_output=True, check=True, text=True,
    )  # fmt: skip
    import json

    token = json.loads(created.stdout)["owner_token"]
    log = (tmp_path / "control.log").open("w")
    process = subprocess.Popen(
        [METRUX, "control", "serve", "--port", str(port), "--no-workers"],
        env=env, stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1).close()  # noqa: S310
                break
            except OSError:
                time.sleep(0.05)  # polling a port: there is no event to await
        yield base, token
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()


def test_no_generated_request_breaks_the_api(live_control: tuple[str, str]) -> None:
    base, token = live_control
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    auth = {"Authorization": f"Bearer {token}"}
    exercised = []
    statuses: list[int] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        exercised.append(f"{operation.method.upper()} {operation.path}")

        @given(case=operation.as_strategy())
        @hypothesis_settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def probe(case: Any) -> None:
            response = case.call(base_url=base, headers=auth)
            statuses.append(response.status_code)
            where = f"{case.method} {case.formatted_path}"
            assert response.status_code < 500, (where, response.text[:300])
            if response.status_code >= 400 and "json" in response.headers.get("Content-Type", ""):
                error = response.json()["error"]
                assert isinstance(error["type"], str), where
                assert isinstance(error["message"], str), where
            assert token not in response.text, where

        probe()
    assert len(exercised) >= 30, exercised
    # It did reach the handlers: successes and refusals of bad input alike.
    assert sum(200 <= code < 300 for code in statuses) >= 20
    assert sum(code in (400, 404, 409, 415, 422) for code in statuses) >= 20
    print(f"schemathesis: {len(statuses)} requests over {len(exercised)} operations")
