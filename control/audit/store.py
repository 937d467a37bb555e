"""Writing and reading the append-only audit log.

`record` runs on the caller's connection, so the audit row commits or rolls back with the
action it describes. Details are redacted before they are stored.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Collection, Mapping
from typing import Any, Literal

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from control.audit.actions import ActorType, AuditAction
from control.audit.chain import GENESIS, Head, chain_of, row_hash
from control.audit.sealing import (
    ERASED,
    SEALED,
    open_fields,
    row_aad,
    seal_fields,
    unseal,
)
from control.db.schema import (
    audit_chains,
    audit_events,
    audit_policy,
    candidates,
    subject_keys,
)
from core.redaction import redact_personal


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
    personal: Mapping[str, str] | None = None,
    subject: str | None = None,
    now: dt.datetime | None = None,
) -> int:
    """Append one audit row on `conn` (inside the caller's transaction); return its id.

    No personal data is stored in the clear: a person's IP address and user agent are
    sealed under their subject key (control/audit/sealing.py), and so are the `personal`
    fields (names, identity-provider ids), under `subject`'s key; details keep `[sealed]`
    in their place. Email addresses never belong in details: any left there are masked."""
    actor_subject = actor_subject_of(actor, candidate_id)
    about_actor = {k: v for k, v in (("ip", actor.ip), ("user_agent", actor.user_agent)) if v}
    in_clear = actor.type in (ActorType.SYSTEM, ActorType.PROXY)  # a service's address
    shown = dict(redact_personal(details or {}))
    if personal:
        if subject is None:
            raise ValueError("personal fields need the subject whose key seals them")
        shown.update(dict.fromkeys(personal, SEALED))
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
        "ip": actor.ip if in_clear else None,
        "user_agent": actor.user_agent if in_clear else None,
        "request_id": actor.request_id,
        "details": json.dumps(shown, sort_keys=True),
    }
    values["chain"] = chain_of(tenant_id)
    values["chain_seq"], values["prev_hash"] = await _take_next_link(conn, values["chain"])
    if about_actor and not in_clear and actor_subject is not None:
        values["actor_subject"] = actor_subject
        values["actor_sealed"] = await _seal(conn, actor_subject, about_actor, values, "actor")
    if personal and subject is not None:
        values["details_subject"] = subject
        values["details_sealed"] = await _seal(conn, subject, dict(personal), values, "details")
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


def actor_subject_of(actor: Actor, candidate_id: str | None = None) -> str | None:
    """Whose key seals this actor's address and user agent (None: no person behind it, or
    a candidate not yet known, whose address is then not kept at all)."""
    if actor.type is ActorType.CANDIDATE:
        owner = candidate_id or actor.id
        return subject_of("candidate", owner) if owner else None
    if actor.type is ActorType.MEMBER and actor.id:
        return subject_of("member", actor.id)
    if actor.type is ActorType.OPERATOR and actor.id:
        return actor.id if actor.id.startswith("operator:") else f"operator:{actor.id}"
    return None


def subject_of(kind: str, subject_id: str) -> str:
    return f"{kind}:{subject_id}"


async def _seal(
    conn: AsyncConnection, subject: str, fields: dict[str, str], row: dict[str, Any], part: str
) -> bytes:
    key = await subject_key(conn, subject)
    return seal_fields(key, fields, row_aad(row["chain"], row["chain_seq"], part))


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
    actor_types: Collection[str] = (),
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
    if actor_types:
        query = query.where(audit_events.c.actor_type.in_(list(actor_types)))
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
    """Audit rows as events, their sealed fields opened while their subject's key exists
    and shown as `[erased]` once it is gone."""
    legacy = {r.candidate_id for r in rows if r.candidate_id and r.ip_sealed is not None}
    legacy |= {r.candidate_id for r in rows if r.candidate_id and r.user_agent_sealed is not None}
    legacy_keys = await erasure_keys(conn, legacy)
    subjects = {r.actor_subject for r in rows if r.actor_subject}
    subjects |= {r.details_subject for r in rows if r.details_subject}
    keys = await subject_keys_of(conn, subjects)
    return [_to_event(row, legacy_keys.get(row.candidate_id), keys) for row in rows]


def _to_event(row: Any, legacy_key: bytes | None, keys: Mapping[str, bytes]) -> AuditEvent:
    ip, user_agent = row.ip, row.user_agent
    if row.ip_sealed is not None:
        ip = unseal(legacy_key, row.ip_sealed) or ERASED
    if row.user_agent_sealed is not None:
        user_agent = unseal(legacy_key, row.user_agent_sealed) or ERASED
    if row.actor_sealed is not None:
        aad = row_aad(row.chain, row.chain_seq, "actor")
        opened = open_fields(keys.get(row.actor_subject), bytes(row.actor_sealed), aad)
        ip = ERASED if opened is None else opened.get("ip")
        user_agent = ERASED if opened is None else opened.get("user_agent")
    details = json.loads(row.details)
    if row.details_sealed is not None:
        aad = row_aad(row.chain, row.chain_seq, "details")
        opened = open_fields(keys.get(row.details_subject), bytes(row.details_sealed), aad)
        for name, value in details.items():
            if value == SEALED:
                details[name] = ERASED if opened is None else opened.get(name, ERASED)
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
        ip=ip,
        user_agent=user_agent,
        request_id=row.request_id,
        details=details,
    )


# --- subject keys (crypto-shredding: control/audit/sealing.py) ------------------------------


async def subject_key(conn: AsyncConnection, subject: str) -> bytes:
    """The subject's key, made on first use (a concurrent first use may win: its key is
    the one read back)."""
    found = await _subject_key(conn, subject)
    if found is not None:
        return found
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    await conn.execute(
        dialect_insert(subject_keys)
        .values(
            subject=subject,
            key=AESGCM.generate_key(bit_length=256),
            created_at=dt.datetime.now(dt.UTC),
        )
        .on_conflict_do_nothing(index_elements=["subject"])
    )
    stored = await _subject_key(conn, subject)
    assert stored is not None
    return stored


async def _subject_key(conn: AsyncConnection, subject: str) -> bytes | None:
    row = (
        await conn.execute(select(subject_keys.c.key).where(subject_keys.c.subject == subject))
    ).first()
    return None if row is None else bytes(row.key)


async def subject_keys_of(conn: AsyncConnection, subjects: set[str]) -> dict[str, bytes]:
    if not subjects:
        return {}
    rows = await conn.execute(
        select(subject_keys.c.subject, subject_keys.c.key).where(
            subject_keys.c.subject.in_(subjects)
        )
    )
    return {row.subject: bytes(row.key) for row in rows}


async def erase_subjects(conn: AsyncConnection, subjects: Collection[str]) -> int:
    """Destroy the subjects' keys: their sealed fields become unreadable for good."""
    if not subjects:
        return 0
    result = await conn.execute(
        delete(subject_keys).where(subject_keys.c.subject.in_(list(subjects)))
    )
    return result.rowcount


# Rows before 0.3 sealed a candidate's address under a key on their row (read only).
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


# --- audit retention (control/audit/archival.py; the triggers of migration 0015) ----------


async def retention_floor(conn: AsyncConnection) -> int:
    """The database's own audit retention floor, in days."""
    found = await conn.execute(select(audit_policy.c.retention_days).where(audit_policy.c.id == 1))
    return int(found.scalar_one())


async def raise_retention_floor(conn: AsyncConnection, days: int) -> None:
    await conn.execute(
        update(audit_policy).where(audit_policy.c.id == 1).values(retention_days=days)
    )


async def archivable_rows(
    conn: AsyncConnection, chain: str, *, after_seq: int, before: dt.datetime, limit: int
) -> list[dict[str, Any]]:
    """The chain's oldest rows after `after_seq`, while they are older than `before`."""
    rows = await chain_rows(conn, chain, after_seq=after_seq, limit=limit)
    prefix: list[dict[str, Any]] = []
    for row in rows:
        if row["occurred_at"] >= before or int(row["chain_seq"]) != after_seq + len(prefix) + 1:
            break
        prefix.append(row)
    return prefix


async def move_chain_base(
    conn: AsyncConnection, chain: str, *, from_seq: int, to_seq: int, to_hash: str
) -> bool:
    """Record rows up to `to_seq` as archived; False if another worker moved the base."""
    result = await conn.execute(
        update(audit_chains)
        .where(audit_chains.c.chain == chain, audit_chains.c.base_seq == from_seq)
        .values(base_seq=to_seq, base_hash=to_hash)
    )
    return result.rowcount == 1


async def delete_archived(conn: AsyncConnection, chain: str, *, through_seq: int) -> int:
    """The one DELETE the audit log allows (migration 0015): archived rows past the floor."""
    result = await conn.execute(
        delete(audit_events).where(
            audit_events.c.chain == chain, audit_events.c.chain_seq <= through_seq
        )
    )
    return result.rowcount
