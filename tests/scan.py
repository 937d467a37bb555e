"""Everything a test can scan for a leaked secret: API responses and the stored database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from control.db.schema import metadata
from core.settings import Settings


class Recorder:
    """Calls the API and keeps every response body, so a test can scan them all."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.bodies: list[str] = []

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.client.request(method, path, **kwargs) as response:
            body = await response.text()
            self.bodies.append(body + json.dumps(dict(response.headers)))
            return response.status, json.loads(body) if body else None


async def database_text(engine: AsyncEngine, settings: Settings) -> str:
    """Everything stored: every row of every table as text (bytes as hex), plus on SQLite
    the raw bytes of the database files (main file and write-ahead log)."""
    chunks = []
    async with engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in await conn.execute(select(table)):
                chunks.append(repr([v.hex() if isinstance(v, bytes) else v for v in row]))
    if engine.dialect.name == "sqlite":
        database = Path(engine.url.database or "")
        for path in database.parent.glob(database.name + "*"):
            chunks.append(path.read_bytes().decode("latin-1"))
    return "\n".join(chunks)
