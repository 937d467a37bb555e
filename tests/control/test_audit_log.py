"""The audit table is append-only in the database itself, on SQLite and on Postgres.

UPDATE and DELETE are refused; the only update allowed is the ON DELETE SET NULL a
hard-delete of a session or candidate causes, and the text copies of the ids stay.
"""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from control.audit import store as audit
from control.audit.actions import AuditAction
from control.db.schema import audit_events, candidates, sessions
from tests.factories import OPERATOR, make_tenant

# What these tests check depends on the database: they run on SQLite and PostgreSQL.
pytestmark = pytest.mark.both_databases

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


async def _seed(engine: AsyncEngine) -> tuple[str, str, str, int]:
    """A tenant, a candidate, a session of theirs, and one audit row pointing at both."""
    tenant = await make_tenant(engine)
    candidate_id, session_id = str(uuid.uuid4()), str(uuid.uuid4())
    async with engine.begin() as conn:
        await conn.execute(
            insert(candidates).values(
                id=candidate_id, email=f"{candidate_id}@example.com", created_at=NOW
            )
        )
        await conn.execute(
            insert(sessions).values(
                id=session_id,
                tenant_id=tenant.tenant_id,
                candidate_id=candidate_id,
                state="issued",
                deadline_at=NOW,
                created_at=NOW,
                updated_at=NOW,
            )
        )
        event_id = await audit.record(
            conn,
            OPERATOR,
            AuditAction.KEY_UNWRAP,
            tenant_id=tenant.tenant_id,
            session_id=session_id,
            candidate_id=candidate_id,
            details={"note": "unwrap"},
        )
    return tenant.tenant_id, candidate_id, session_id, event_id


async def _row(engine: AsyncEngine, event_id: int) -> dict[str, object]:
    async with engine.connect() as conn:
        row = (await conn.execute(select(audit_events).where(audit_events.c.id == event_id))).one()
    return dict(row._mapping)


def _refused(exc: BaseException) -> bool:
    return "append-only" in str(exc)


@pytest.mark.parametrize(
    "change",
    [
        {"action": "key:upload"},
        {"details": "{}"},
        {"ip": "10.0.0.1"},
        {"session_id_text": None},
        {"outcome": "failure"},
    ],
)
async def test_update_is_refused(engine: AsyncEngine, change: dict[str, object]) -> None:
    *_, event_id = await _seed(engine)
    before = await _row(engine, event_id)
    with pytest.raises(DBAPIError) as caught:
        async with engine.begin() as conn:
            await conn.execute(
                update(audit_events).where(audit_events.c.id == event_id).values(**change)
            )
    assert _refused(caught.value)
    assert await _row(engine, event_id) == before


async def test_delete_is_refused(engine: AsyncEngine) -> None:
    *_, event_id = await _seed(engine)
    with pytest.raises(DBAPIError) as caught:
        async with engine.begin() as conn:
            await conn.execute(delete(audit_events).where(audit_events.c.id == event_id))
    assert _refused(caught.value)
    assert (await _row(engine, event_id))["id"] == event_id


async def test_nulling_a_foreign_key_while_its_parent_exists_is_refused(
    engine: AsyncEngine,
) -> None:
    *_, event_id = await _seed(engine)
    for column in ("session_id", "candidate_id"):
        with pytest.raises(DBAPIError) as caught:
            async with engine.begin() as conn:
                await conn.execute(
                    update(audit_events).where(audit_events.c.id == event_id).values({column: None})
                )
        assert _refused(caught.value)


async def test_hard_delete_of_session_and_candidate_nulls_the_links_and_keeps_the_ids(
    engine: AsyncEngine,
) -> None:
    _, candidate_id, session_id, event_id = await _seed(engine)
    before = await _row(engine, event_id)
    async with engine.begin() as conn:
        await conn.execute(delete(sessions).where(sessions.c.id == session_id))
        await conn.execute(delete(candidates).where(candidates.c.id == candidate_id))
    after = await _row(engine, event_id)
    assert after["session_id"] is None
    assert after["candidate_id"] is None
    assert after["session_id_text"] == session_id
    assert after["candidate_id_text"] == candidate_id
    unchanged = {k: v for k, v in before.items() if k not in ("session_id", "candidate_id")}
    assert {k: v for k, v in after.items() if k not in ("session_id", "candidate_id")} == unchanged


async def test_nulling_a_link_together_with_another_column_is_refused(engine: AsyncEngine) -> None:
    """The guard allows only the bare FK-to-NULL update, never one that edits more."""
    *_, event_id = await _seed(engine)
    with pytest.raises(DBAPIError) as caught:
        async with engine.begin() as conn:
            await conn.execute(
                update(audit_events)
                .where(audit_events.c.id == event_id)
                .values(session_id=None, candidate_id=None, action="key:upload")
            )
    assert _refused(caught.value)


async def test_details_with_an_anthropic_key_shape_are_rejected_by_the_database(
    engine: AsyncEngine,
) -> None:
    """A backstop behind redaction: a raw insert of an sk-ant- string fails."""
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(
                insert(audit_events).values(
                    occurred_at=NOW,
                    actor_type="system",
                    action="key:upload",
                    outcome="success",
                    details='{"leak": "sk-ant-api03-abc"}',
                )
            )


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_postgres_refuses_truncate_and_replica_mode_tampering(engine: AsyncEngine) -> None:
    *_, event_id = await _seed(engine)
    with pytest.raises(DBAPIError) as caught:
        async with engine.begin() as conn:
            await conn.execute(text("TRUNCATE audit_events CASCADE"))
    assert _refused(caught.value)

    async def update_as_replica() -> None:
        async with engine.begin() as conn:
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
            await conn.execute(
                update(audit_events).where(audit_events.c.id == event_id).values(ip="x")
            )

    with pytest.raises(DBAPIError) as caught:
        await update_as_replica()
    assert _refused(caught.value)
    assert (await _row(engine, event_id))["ip"] is None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sqlite_connections_enforce_foreign_keys(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
