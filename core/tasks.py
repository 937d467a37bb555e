"""The one place that creates asyncio tasks: every task gets a name and a strong reference.

asyncio keeps only weak references to tasks, so a fire-and-forget task can be garbage
collected mid-flight; `spawn` keeps it alive until it finishes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")
_running: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, _T], *, name: str) -> asyncio.Task[_T]:
    task = asyncio.create_task(coro, name=name)  # noqa: TID251 - this is the wrapper
    _running.add(task)
    task.add_done_callback(_running.discard)
    return task
