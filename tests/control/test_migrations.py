"""Migrations build, on SQLite and Postgres, exactly the schema control/db/schema.py declares."""

from __future__ import annotations

import datetime as dt

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from control.db import migrate
from control.db.schema import api_keys, metadata

# What these tests check depends on the database: they run on SQLite and PostgreSQL.
pytestmark = pytest.mark.both_databases


async def test_database_is_at_head(engine: AsyncEngine) -> None:
    assert await migrate.current_revision(engine) == migrate.head_revision()


async def test_migrated_schema_matches_the_declared_tables(engine: AsyncEngine) -> None:
    """Alembic's autogenerate comparison finds nothing to add, drop or alter."""
    async with engine.connect() as conn:
        diff = await conn.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
        )
    assert diff == []


async def test_upgrade_is_idempotent(engine: AsyncEngine) -> None:
    await migrate.upgrade(engine)
    assert await migrate.current_revision(engine) == migrate.head_revision()


async def test_existing_keys_get_a_default_and_a_first_check(engine: AsyncEngine) -> None:
    """0005 on a database with keys: each tenant's newest live key becomes its default,
    live keys are due for a check, revoked ones are marked revoked."""
    await migrate.downgrade(engine, "0004")
    old, new, revoked = (dt.datetime(2026, 1, d, tzinfo=dt.UTC) for d in (1, 2, 3))
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'T', :at)"),
            {"at": old},
        )
        for key_id, created, revoked_at in [
            ("k-old", old, None),
            ("k-new", new, None),
            ("k-gone", revoked, revoked),
        ]:
            await conn.execute(
                text(
                    "INSERT INTO api_keys (id, tenant_id, format_version, last_four, "
                    "fingerprint, created_at, revoked_at) "
                    "VALUES (:id, 't1', 1, 'abcd', :id, :created, :revoked)"
                ),
                {"id": key_id, "created": created, "revoked": revoked_at},
            )
    await migrate.upgrade(engine)
    async with engine.connect() as conn:
        rows = {
            row.id: row
            for row in await conn.execute(
                select(
                    api_keys.c.id,
                    api_keys.c.status,
                    api_keys.c.is_default,
                    api_keys.c.next_check_at,
                )
            )
        }
    assert {k: (r.status, r.is_default) for k, r in rows.items()} == {
        "k-old": ("unverified", False),
        "k-new": ("unverified", True),
        "k-gone": ("revoked", False),
    }
    assert rows["k-new"].next_check_at is not None
    assert rows["k-gone"].next_check_at is None
