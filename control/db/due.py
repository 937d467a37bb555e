"""`Due`: the rows a retention rule applies to, as a store describes them.

A store builds one (its query never leaves it as SQL to the caller); control/retention
counts it for a dry run, or takes ids from it in batches and hands them back to the store,
whose change repeats the due condition so it applies once whoever else is running.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncConnection


@dataclasses.dataclass(frozen=True, slots=True)
class Due:
    ids: Select[Any]  # one column: the ids of the rows that are due

    async def count(self, conn: AsyncConnection) -> int:
        result = await conn.execute(select(func.count()).select_from(self.ids.subquery()))
        return int(result.scalar_one())

    async def take(self, conn: AsyncConnection, limit: int) -> list[Any]:
        return [row[0] for row in await conn.execute(self.ids.limit(limit))]
