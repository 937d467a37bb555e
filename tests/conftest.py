"""Shared fixtures: settings, databases (SQLite and Postgres), Redis, the control-plane app.

PostgreSQL and Redis are real servers, found through METRUX_TEST_POSTGRES_URL and
METRUX_TEST_REDIS_URL. On a laptop without them those tests skip; with CI=true a missing
service fails the run instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import logging
import os
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
import structlog
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from control.app import create_app
from control.db import migrate
from control.db.engine import create_engine
from core.logging import configure_logging
from core.settings import LogFormat, Settings, parse_database_url
from tests.factories import METRICS_TOKEN

CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_URL = os.environ.get(
    "METRUX_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("METRUX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CLOSED_UPSTREAM = "http://127.0.0.1:9"  # the discard port: refused at once
_T = TypeVar("_T")


def run_blocking(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine to completion on its own loop in a worker thread, so sync fixtures
    never touch the loop pytest-asyncio runs the test on."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def service_missing(name: str, why: str) -> None:
    message = f"{name} is not reachable ({why})"
    if CI:
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(message)


# --- PostgreSQL: one migrated template per run, a fresh copy per test ----------------------


def _admin_dsn(database: str | None = None) -> str:
    base, _, current = POSTGRES_URL.rpartition("/")
    return f"{base}/{database or current}"


async def _pg_execute(sql: str) -> None:
    conn = await asyncpg.connect(_admin_dsn(), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    name = f"metrux_tpl_{uuid.uuid4().hex[:10]}"
    try:
        run_blocking(_pg_execute(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        service_missing("PostgreSQL", f"{POSTGRES_URL}: {type(exc).__name__}: {exc}")

    async def migrate_template() -> None:
        engine = create_engine(parse_database_url(_admin_dsn(name)))
        try:
            await migrate.upgrade(engine)
        finally:
            await engine.dispose()

    run_blocking(migrate_template())
    yield name
    run_blocking(_pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


DATABASE_KINDS = ("sqlite", "postgres")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: drives the service end to end with real clients (tests/e2e/)"
    )
    config.addinivalue_line(
        "markers",
        "process: starts the service's own processes (proxy, control plane, launcher, key "
        "opener); `-m 'not process'` is the quick in-process run",
    )
    config.addinivalue_line(
        "markers",
        "both_databases: run on SQLite and on PostgreSQL (stores, migrations, the audit "
        "trigger, retention, ingest, bad input, the journey); other tests run on SQLite",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    e2e = Path(__file__).parent / "e2e"
    for item in items:
        if e2e in item.path.parents:
            item.add_marker(pytest.mark.e2e)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Each test that uses a database gets SQLite; one marked both_databases, where the
    database's behaviour is what is tested, runs on PostgreSQL too. A test that names its
    database with its own parametrize keeps it."""
    if "database_url" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0]
        if "database_url" in (
            names.replace(" ", "").split(",") if isinstance(names, str) else names
        ):
            return
    both = metafunc.definition.get_closest_marker("both_databases") is not None
    metafunc.parametrize("database_url", DATABASE_KINDS if both else ("sqlite",), indirect=True)


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database of the kind the test is parametrized with."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'metrux.db'}"

        async def migrate_sqlite() -> None:
            engine = create_engine(url)
            try:
                await migrate.upgrade(engine)
            finally:
                await engine.dispose()

        run_blocking(migrate_sqlite())
        yield url
        return
    template = request.getfixturevalue("postgres_template")
    name = f"metrux_t_{uuid.uuid4().hex[:12]}"
    run_blocking(_pg_execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    yield parse_database_url(_admin_dsn(name))
    run_blocking(_pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


# --- Redis -----------------------------------------------------------------------------------


@pytest.fixture
async def redis_url() -> str:
    client = Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except (OSError, ConnectionError, TimeoutError) as exc:
        service_missing("Redis", f"{REDIS_URL}: {type(exc).__name__}")
    except Exception as exc:  # redis-py's own ConnectionError is not an OSError
        service_missing("Redis", f"{REDIS_URL}: {type(exc).__name__}")
    finally:
        await client.aclose()
    return REDIS_URL


# --- Settings, logs and the app ----------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path, database_url: str, redis_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        redis_url=redis_url,
        key_encryption_key=os.urandom(32),
        log_format=LogFormat.JSON,
        redis_prefix=f"metrux-test-{uuid.uuid4().hex[:12]}:",
        # No test reaches the internet: a closed local port, so keys uploaded through
        # this app are stored `unverified`; tests of key checks point at a FakeAnthropic.
        upstream_url=CLOSED_UPSTREAM,
        metrics_token=METRICS_TOKEN,
    )


@pytest.fixture
def log_output(settings: Settings) -> Iterator[io.StringIO]:
    """Everything the process logs during the test, rendered as it would be in production."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    configure_logging(settings, stream=stream)
    yield stream
    structlog.reset_defaults()
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


@pytest.fixture
async def client(aiohttp_client, settings: Settings, log_output: io.StringIO):  # type: ignore[no-untyped-def]
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return await aiohttp_client(create_app(settings))


# --- AWS KMS, played by moto's server over real HTTP ------------------------------------------


@pytest.fixture(scope="session")
def kms_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake AWS credentials in the environment, for moto's server."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
async def kms_key(kms_server: str, aws_env: None) -> str:
    """A fresh KMS key's alias on the local KMS, with fake AWS credentials in the env."""
    import aioboto3

    alias = f"alias/metrux-{uuid.uuid4().hex[:8]}"
    async with aioboto3.Session().client("kms", endpoint_url=kms_server) as kms:
        key_id = (await kms.create_key())["KeyMetadata"]["KeyId"]
        await kms.create_alias(AliasName=alias, TargetKeyId=key_id)
    return alias
