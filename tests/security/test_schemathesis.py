"""Schemathesis against the control plane's own OpenAPI document, on a live `metrux
control serve` process: generated requests to every operation, as a member with a valid
token, must never cause a server error and must always answer in the API's error shape.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
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


HUGE = "9" * 5000  # more digits than Python reads as an int (4,300)
POISON_VALUES = ['"a\\u0000b"', HUGE, "-" + HUGE, "1e400", '"' + "x" * 10_000 + '"']


def _operations(base: str) -> list[tuple[str, str, dict[str, Any]]]:
    with urllib.request.urlopen(f"{base}/openapi.json", timeout=10) as response:  # noqa: S310
        document = json.loads(response.read())
    return [
        (method.upper(), path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]


def _call(method: str, url: str, token: str, body: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(  # noqa: S310
        url,
        method=method,
        data=None if body is None else body.encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_nuls_and_huge_numbers_in_every_field_never_break_the_api(
    live_control: tuple[str, str],
) -> None:
    """Every operation, every path parameter, query parameter and top-level body field,
    given a NUL, a number past what Python reads, an infinite float and an oversized
    string: a 4xx in the error shape, never a 5xx."""
    base, token = live_control
    tried = 0
    for method, path, operation in _operations(base):
        names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
        schema = (
            operation.get("requestBody", {}).get("content", {}).get("application/json", {})
        ).get("schema", {})
        fields = list(_properties(schema, base))
        concrete = re.sub(r"\{[^}]+\}", "00000000-0000-0000-0000-000000000000", path)
        urls = [base + re.sub(r"\{[^}]+\}", "%00", path), base + re.sub(r"\{[^}]+\}", HUGE, path)]
        urls += [f"{base}{concrete}?{name}={value}" for name in names for value in ("%00", HUGE)]
        for url in urls if "{" in path or names else []:
            status, text = _call(method, url, token, "{}" if method in ("POST", "PUT") else None)
            tried += 1
            assert status < 500, (method, url[:120], text[:300])
        for field in fields:
            for value in POISON_VALUES:
                status, text = _call(method, base + concrete, token, f'{{"{field}": {value}}}')
                tried += 1
                assert status < 500, (method, path, field, value[:20], text[:300])
                if status >= 400:
                    assert isinstance(json.loads(text)["error"]["message"], str)
    assert tried >= 150, tried


def _properties(schema: dict[str, Any], base: str) -> list[str]:
    """The top-level property names of a body schema (following one $ref)."""
    if "$ref" in schema:
        with urllib.request.urlopen(f"{base}/openapi.json", timeout=10) as response:  # noqa: S310
            components = json.loads(response.read())["components"]["schemas"]
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    return list(schema.get("properties", {}))
