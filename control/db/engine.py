"""Async engine construction for Postgres (asyncpg) and SQLite (aiosqlite)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An engine for an async URL (see core.settings.parse_database_url)."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, **kwargs)
        _configure_sqlite(engine)
        return engine
    return create_async_engine(url, pool_pre_ping=True, **kwargs)


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the sqlite3 module (it would defer BEGIN past
        # SELECTs), so that every SQLAlchemy transaction is a real one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # Off by default in SQLite: without it ON DELETE SET NULL does nothing and
        # deleting a parent leaves dangling ids (SECURITY-CHECKS.md E9).
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA busy_timeout = 5000")
        # Deleted rows are overwritten, not left in free pages: erasure (retention,
        # deletion requests) must not leave the data readable in the file.
        cursor.execute("PRAGMA secure_delete = ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock up front, so two writers queue on busy_timeout
        # instead of one failing when it upgrades a read lock.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


async def flush_deleted(engine: AsyncEngine) -> None:
    """On SQLite, checkpoint and truncate the write-ahead log, whose older frames still
    hold rows that were deleted since; Postgres's dead tuples are autovacuum's."""
    if engine.dialect.name != "sqlite":
        return
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        cursor = await driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        await cursor.close()


async def ping(engine: AsyncEngine) -> None:
    """One round trip to the database (readiness); raises if it does not answer."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
