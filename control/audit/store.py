"""Writing and reading the append-only audit log.

`record` runs on the caller's connection, so the audit row commits or rolls back with the
action it describes. Details are redacted before they are stored.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Collection
from typing import Any, Literal

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from control.audit.actions import ActorType, AuditAction
from control.audit.chain import GENESIS, Head, chain_of, row_hash
from control.audit.sealing import seal, unseal
from control.db.schema import audit_chains, audit_events, candidates
from core.redaction import redact_value


@dataclasses.dataclass(frozen=True, slots=True)
class Actor:
    type: ActorType
    id: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class AuditEvent:
    id: int
    occurred_at: dt.datetime
    tenant_id: str | None
    actor_type: str
    actor_id: str | None
    action: str
    outcome: str
    target_type: str | None
    target_id: str | None
    session_id: str | None
    candidate_id: str | None
    ip: str | None
    user_agent: str | None
    request_id: str | None
    details: dict[str, Any]


async def record(
    conn: AsyncConnection,
    actor: Actor,
    action: AuditAction,
    *,
    tenant_id: str | None,
    target_type: str | None = None,
    target_id: str | None = None,
    session_id: str | None = None,
    candidate_id: str | None = None,
    outcome: str = "success",
    details: dict[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> int:
    """Append one audit row on `conn` (inside the caller's transaction); return its id.

    A candidate's own IP and user agent are stored sealed under their erasure key, never
    in the clear, so deleting the candidate erases them from rows that never change."""
    ip, user_agent, ip_sealed, user_agent_sealed = actor.ip, actor.user_agent, None, None
    if actor.type is ActorType.CANDIDATE:
        owner = candidate_id or actor.id
        key = await erasure_key(conn, owner) if owner else None
        if key is not None:
            ip_sealed = seal(key, ip) if ip else None
            user_agent_sealed = seal(key, user_agent) if user_agent else None
        ip = user_agent = None
    values: dict[str, Any] = {
        # Microseconds are what both databases keep: the hash covers the stored value.
        "occurred_at": _stored_time(now or dt.datetime.now(dt.UTC)),
        "tenant_id": tenant_id,
        "actor_type": actor.type.value,
        "actor_id": actor.id,
        "action": action.value,
        "outcome": outcome,
        "target_type": target_type,
        "target_id": target_id,
        "session_id_text": session_id,
        "candidate_id_text": candidate_id,
        "ip": ip,
        "user_agent": user_agent,
        "ip_sealed": ip_sealed,
        "user_agent_sealed": user_agent_sealed,
        "request_id": actor.request_id,
        "details": json.dumps(redact_value(details or {}), sort_keys=True),
    }
    values["chain"] = chain_of(tenant_id)
    values["chain_seq"], values["prev_hash"] = await _take_next_link(conn, values["chain"])
    values["row_hash"] = row_hash(values)
    await conn.execute(
        update(audit_chains)
        .where(audit_chains.c.chain == values["chain"])
        .values(head_hash=values["row_hash"])
    )
    result = await conn.execute(
        insert(audit_events)
        .values(session_id=session_id, candidate_id=candidate_id, **values)
        .returning(audit_events.c.id)
    )
    return int(result.scalar_one())


def _stored_time(at: dt.datetime) -> dt.datetime:
    return at.astimezone(dt.UTC)


async def _take_next_link(conn: AsyncConnection, chain: str) -> tuple[int, str]:
    """The next seq of `chain` and the hash it links to. The UPDATE row-locks the head until
    the caller's transaction ends, so appends to one chain queue (on SQLite every write
    does); appends to different tenants' chains do not wait on each other."""
    for _ in range(2):
        taken = (
            await conn.execute(
                update(audit_chains)
                .where(audit_chains.c.chain == chain)
                .values(seq=audit_chains.c.seq + 1)
                .returning(audit_chains.c.seq, audit_chains.c.head_hash)
            )
        ).first()
        if taken is not None:
            return int(taken.seq), str(taken.head_hash)
        await conn.execute(_insert_ignoring_conflict(conn, chain))
    raise RuntimeError(f"audit chain {chain} could not be started")


def _insert_ignoring_conflict(conn: AsyncConnection, chain: str) -> Any:
    """A new chain's head; a concurrent first append may have made it already."""
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    return (
        dialect_insert(audit_chains)
        .values(chain=chain, seq=0, head_hash=GENESIS, base_seq=0, base_hash=GENESIS)
        .on_conflict_do_nothing(index_elements=["chain"])
    )


async def record_operator_read(
    conn: AsyncConnection, actor: Actor, *, command: str, target_type: str, **read: Any
) -> int:
    """An `operator:read` row for a command that reads across tenants (tenant none): which
    command, and how much it read (`read`: counts and filters, never the data)."""
    return await record(
        conn,
        actor,
        AuditAction.OPERATOR_READ,
        tenant_id=None,
        target_type=target_type,
        details={"command": command, **read},
    )


async def list_events(
    conn: AsyncConnection,
    tenant_id: str,
    *,
    limit: int,
    before_id: int | None = None,
    actions: Collection[str] = (),
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    access: Literal["exclude", "include", "only"] = "include",
) -> list[AuditEvent]:
    """A tenant's events, newest first; `before_id` continues a previous page. `access`
    keeps, drops or keeps only the access rows (api:read, api:write)."""
    query = select(audit_events).where(audit_events.c.tenant_id == tenant_id)
    access_actions = [AuditAction.API_READ.value, AuditAction.API_WRITE.value]
    if access == "exclude":
        query = query.where(audit_events.c.action.not_in(access_actions))
    elif access == "only":
        query = query.where(audit_events.c.action.in_(access_actions))
    if before_id is not None:
        query = query.where(audit_events.c.id < before_id)
    if actions:
        query = query.where(audit_events.c.action.in_(list(actions)))
    if since is not None:
        query = query.where(audit_events.c.occurred_at >= since)
    if until is not None:
        query = query.where(audit_events.c.occurred_at < until)
    rows = await conn.execute(query.order_by(audit_events.c.id.desc()).limit(limit))
    return await to_events(conn, list(rows))


async def events_about_candidate(
    conn: AsyncConnection, candidate_id: str, session_ids: Collection[str]
) -> list[AuditEvent]:
    """Every event naming the candidate or one of their sessions, oldest first."""
    rows = await conn.execute(
        select(audit_events)
        .where(
            or_(
                audit_events.c.candidate_id_text == candidate_id,
                audit_events.c.session_id_text.in_(list(session_ids)),
            )
        )
        .order_by(audit_events.c.id)
    )
    return await to_events(conn, list(rows))


async def events_of_session(
    conn: AsyncConnection, tenant_id: str, session_id: str
) -> list[AuditEvent]:
    """A tenant's events about one session, oldest first."""
    rows = await conn.execute(
        select(audit_events)
        .where(audit_events.c.tenant_id == tenant_id, audit_events.c.session_id_text == session_id)
        .order_by(audit_events.c.id)
    )
    return await to_events(conn, list(rows))


async def to_events(conn: AsyncConnection, rows: list[Any]) -> list[AuditEvent]:
    """Audit rows as events, candidates' sealed IPs and user agents opened where the
    candidate still exists."""
    sealed_for = {r.candidate_id for r in rows if r.candidate_id and r.ip_sealed is not None}
    sealed_for |= {
        r.candidate_id for r in rows if r.candidate_id and r.user_agent_sealed is not None
    }
    keys = await erasure_keys(conn, sealed_for)
    return [_to_event(row, keys.get(row.candidate_id)) for row in rows]


def _to_event(row: Any, key: bytes | None) -> AuditEvent:
    return AuditEvent(
        id=row.id,
        occurred_at=row.occurred_at,
        tenant_id=row.tenant_id,
        actor_type=row.actor_type,
        actor_id=row.actor_id,
        action=row.action,
        outcome=row.outcome,
        target_type=row.target_type,
        target_id=row.target_id,
        # The text copies survive a hard-delete of the session or candidate.
        session_id=row.session_id_text,
        candidate_id=row.candidate_id_text,
        ip=row.ip if row.ip_sealed is None else unseal(key, row.ip_sealed),
        user_agent=(
            row.user_agent if row.user_agent_sealed is None else unseal(key, row.user_agent_sealed)
        ),
        request_id=row.request_id,
        details=json.loads(row.details),
    )


# A candidate's erasure key sits in their row: deleting the candidate erases the key.
async def erasure_key(conn: AsyncConnection, candidate_id: str) -> bytes | None:
    """The candidate's erasure key, made on first use; None if there is no such candidate."""
    row = (
        await conn.execute(select(candidates.c.erasure_key).where(candidates.c.id == candidate_id))
    ).first()
    if row is None:
        return None
    if row.erasure_key is not None:
        return bytes(row.erasure_key)
    key = AESGCM.generate_key(bit_length=256)
    await conn.execute(
        update(candidates)
        .where(candidates.c.id == candidate_id, candidates.c.erasure_key.is_(None))
        .values(erasure_key=key)
    )
    # A concurrent first use may have won: read back the key that is stored.
    stored = (
        await conn.execute(select(candidates.c.erasure_key).where(candidates.c.id == candidate_id))
    ).scalar_one()
    return bytes(stored)


async def erasure_keys(conn: AsyncConnection, candidate_ids: set[str]) -> dict[str, bytes]:
    if not candidate_ids:
        return {}
    rows = await conn.execute(
        select(candidates.c.id, candidates.c.erasure_key).where(
            candidates.c.id.in_(candidate_ids), candidates.c.erasure_key.is_not(None)
        )
    )
    return {row.id: bytes(row.erasure_key) for row in rows}


# --- the hash chains (control/audit/chain.py) ---------------------------------------------


async def chain_heads(conn: AsyncConnection, chain: str | None = None) -> list[Head]:
    """Every chain's head (or one chain's), by chain name."""
    query = select(audit_chains).order_by(audit_chains.c.chain)
    if chain is not None:
        query = query.where(audit_chains.c.chain == chain)
    return [
        Head(r.chain, int(r.seq), r.head_hash, int(r.base_seq), r.base_hash)
        for r in await conn.execute(query)
    ]


async def chain_rows(
    conn: AsyncConnection, chain: str, *, after_seq: int, limit: int
) -> list[dict[str, Any]]:
    """One chain's stored rows after `after_seq`, in chain order."""
    rows = await conn.execute(
        select(audit_events)
        .where(audit_events.c.chain == chain, audit_events.c.chain_seq > after_seq)
        .order_by(audit_events.c.chain_seq)
        .limit(limit)
    )
    return [dict(row._mapping) for row in rows]
