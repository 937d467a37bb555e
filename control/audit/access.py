"""Access rows: one audit row for every authenticated member or operator request.

Privacy policy §7 promises an audit row for every admin-endpoint access, reads included. A
read must not wait on an audit insert, so requests only note their access here and a task
writes the notes in batches, one transaction each, off the request path. Nothing is
dropped: a failed batch stays pending and is retried, and once `max_pending` notes wait,
the request that adds one writes the backlog itself; if that fails too, the request is
answered 503 rather than served unaudited. `close()` writes what is left at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
from collections.abc import Mapping

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control.audit import store
from control.audit.actions import AuditAction
from control.audit.store import Actor

log = structlog.get_logger(__name__)

READ_METHODS = frozenset({"GET", "HEAD"})
ACCESS_ACTIONS = (AuditAction.API_READ, AuditAction.API_WRITE)
_PARAM_CHARS = 100  # path parameters are ids; a longer one is a client's invention


@dataclasses.dataclass(frozen=True, slots=True)
class Access:
    """One authenticated request, as its access row records it."""

    tenant_id: str
    actor: Actor
    method: str
    route: str  # the route template, e.g. /v1/sessions/{session_id}
    params: Mapping[str, str]
    status: int
    at: dt.datetime

    @property
    def action(self) -> AuditAction:
        return AuditAction.API_READ if self.method in READ_METHODS else AuditAction.API_WRITE


class AccessLogUnavailable(Exception):
    """Too many access rows wait and the database takes none: serve nothing unaudited."""


class AccessLog:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        batch: int = 200,
        every_s: float = 0.5,
        max_pending: int = 10_000,
    ) -> None:
        self._engine = engine
        self._batch = batch
        self._every_s = every_s
        self._max_pending = max_pending
        self._pending: list[Access] = []
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def note(self, access: Access) -> None:
        self._pending.append(access)
        if len(self._pending) >= self._max_pending:
            try:
                await self.flush()
            except Exception as exc:
                raise AccessLogUnavailable from exc
        elif len(self._pending) >= self._batch:
            self._wake.set()

    async def flush(self) -> int:
        """Write every pending note, a batch per transaction; return how many were written."""
        written = 0
        async with self._lock:
            while self._pending:
                batch = self._pending[: self._batch]
                async with self._engine.begin() as conn:
                    # By tenant (stable: each tenant's rows keep their order), so two
                    # replicas' batches take the tenants' chain heads in the same order and
                    # cannot deadlock.
                    for access in sorted(batch, key=lambda a: a.tenant_id):
                        await _write(conn, access)
                del self._pending[: len(batch)]
                written += len(batch)
        return written

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="access-log")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self.flush()
        except Exception as exc:  # at shutdown there is no later: say what is lost
            log.error("audit_access_rows_lost", count=self.pending, error=type(exc).__name__)

    async def _run(self) -> None:
        delay = self._every_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()
            try:
                await self.flush()
                delay = self._every_s
            except Exception as exc:  # kept pending; retried with a growing pause
                delay = min(delay * 2, 30.0)
                log.warning(
                    "audit_access_flush_failed",
                    pending=self.pending,
                    error=type(exc).__name__,
                    retry_in_s=delay,
                )


async def _write(conn: AsyncConnection, access: Access) -> None:
    await store.record(
        conn,
        access.actor,
        access.action,
        tenant_id=access.tenant_id,
        target_type="route",
        target_id=access.route[:100],
        outcome="success" if access.status < 400 else "failure",
        details={
            "method": access.method,
            "route": access.route,
            "status": access.status,
            **({"params": dict(access.params)} if access.params else {}),
        },
        now=access.at,
    )


def route_params(match_info: Mapping[str, str]) -> dict[str, str]:
    """The request's path parameters, cut to a length an id can have."""
    return {name: value[:_PARAM_CHARS] for name, value in match_info.items()}
