"""The audit log's personal data becomes erasable, and the log tamper-evident.

Revision ID: 0013
Revises: 0012

1. Crypto-shredding (control/audit/sealing.py): `subject_keys`, and sealed columns on
   audit_events. Existing rows' personal fields are sealed under their subject's new key:
   members' and operators' IP addresses and user agents, the company name in
   `tenant:create`, the identity-provider id in `auth:handoff`. Candidates' addresses were
   already sealed (under the key on their row) and stay as they are.
2. The hash chain (control/audit/chain.py): chain, chain_seq, prev_hash and row_hash, and
   the audit_chains heads; the rows already there are chained oldest first, after 1.

Both rewrite existing rows, which the append-only guard refuses. This migration, run by the
database owner once, before any chain exists, lifts the guard and puts it back: on SQLite
the UPDATE guard is recreated with the new columns frozen too; on Postgres the guard
compares whole rows and is re-enabled ALWAYS. Nothing personal written before it stays in
the clear, except what earlier revisions already erased or sealed.
"""

import datetime as dt
import json
import os
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

from control.audit import chain as audit_chain
from control.audit.sealing import SEALED, row_aad, seal_fields
from control.db.schema import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

FROZEN_COLUMNS = (
    "id",
    "occurred_at",
    "tenant_id",
    "actor_type",
    "actor_id",
    "action",
    "outcome",
    "target_type",
    "target_id",
    "session_id_text",
    "candidate_id_text",
    "ip",
    "user_agent",
    "ip_sealed",
    "user_agent_sealed",
    "request_id",
    "details",
    "actor_subject",
    "actor_sealed",
    "details_subject",
    "details_sealed",
    "chain",
    "chain_seq",
    "prev_hash",
    "row_hash",
)
NEW_COLUMNS = FROZEN_COLUMNS[FROZEN_COLUMNS.index("actor_subject") :]
_REWRITTEN = ("ip", "user_agent", "details", *NEW_COLUMNS)

SQLITE_GUARD = f"""
    CREATE TRIGGER audit_events_guard_update BEFORE UPDATE ON audit_events
    WHEN NOT (
        {" AND ".join(f"NEW.{c} IS OLD.{c}" for c in FROZEN_COLUMNS)}
        AND (NEW.session_id IS OLD.session_id OR (NEW.session_id IS NULL
             AND NOT EXISTS (SELECT 1 FROM sessions WHERE id = OLD.session_id)))
        AND (NEW.candidate_id IS OLD.candidate_id OR (NEW.candidate_id IS NULL
             AND NOT EXISTS (SELECT 1 FROM candidates WHERE id = OLD.candidate_id)))
        AND (NEW.session_id IS NOT OLD.session_id OR NEW.candidate_id IS NOT OLD.candidate_id)
    )
    BEGIN SELECT RAISE(ABORT, 'audit_events is append-only (UPDATE refused)'); END
"""

# audit_events as this revision knows it (later revisions add columns).
_events = sa.Table(
    "audit_events",
    sa.MetaData(),
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("occurred_at", UTCDateTime),
    *(
        sa.Column(name, sa.LargeBinary if name.endswith("_sealed") else sa.Text)
        for name in FROZEN_COLUMNS
        if name not in ("id", "occurred_at", "chain_seq")
    ),
    sa.Column("chain_seq", sa.BigInteger),
)
_subject_keys = sa.Table(
    "subject_keys",
    sa.MetaData(),
    sa.Column("subject", sa.String(80)),
    sa.Column("key", sa.LargeBinary),
    sa.Column("created_at", UTCDateTime),
)
_chains = sa.Table(
    "audit_chains",
    sa.MetaData(),
    sa.Column("chain", sa.String(36)),
    sa.Column("seq", sa.BigInteger),
    sa.Column("head_hash", sa.String(64)),
    sa.Column("base_seq", sa.BigInteger),
    sa.Column("base_hash", sa.String(64)),
)


def upgrade() -> None:
    bind = op.get_bind()
    op.create_table(
        "subject_keys",
        sa.Column("subject", sa.String(80), primary_key=True),
        sa.Column("key", sa.LargeBinary, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.add_column("audit_events", sa.Column("actor_subject", sa.String(80)))
    op.add_column("audit_events", sa.Column("actor_sealed", sa.LargeBinary))
    op.add_column("audit_events", sa.Column("details_subject", sa.String(80)))
    op.add_column("audit_events", sa.Column("details_sealed", sa.LargeBinary))
    op.add_column("audit_events", sa.Column("chain", sa.String(36)))
    op.add_column("audit_events", sa.Column("chain_seq", sa.BigInteger))
    op.add_column("audit_events", sa.Column("prev_hash", sa.String(64)))
    op.add_column("audit_events", sa.Column("row_hash", sa.String(64)))
    op.create_table(
        "audit_chains",
        sa.Column("chain", sa.String(36), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("base_seq", sa.BigInteger, nullable=False),
        sa.Column("base_hash", sa.String(64), nullable=False),
    )
    if bind.dialect.name == "sqlite":
        op.execute("DROP TRIGGER audit_events_guard_update")
    else:
        op.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_events_guard")
    heads = _chain_existing_rows(bind)
    if heads:
        bind.execute(
            _chains.insert(),
            [
                {
                    "chain": c,
                    "seq": s,
                    "head_hash": h,
                    "base_seq": 0,
                    "base_hash": audit_chain.GENESIS,
                }
                for c, (s, h) in heads.items()
            ],
        )
    op.create_index(
        "uq_audit_events_chain_seq", "audit_events", ["chain", "chain_seq"], unique=True
    )
    if bind.dialect.name == "sqlite":
        op.execute(SQLITE_GUARD)
    else:
        op.execute("ALTER TABLE audit_events ENABLE ALWAYS TRIGGER audit_events_guard")


def _chain_existing_rows(bind: sa.Connection) -> dict[str, tuple[int, str]]:
    heads: dict[str, tuple[int, str]] = {}
    keys: dict[str, bytes] = {}
    for row in _all_rows(bind):
        chain = audit_chain.chain_of(row["tenant_id"])
        seq, prev = heads.get(chain, (0, audit_chain.GENESIS))
        values = {**row, "chain": chain, "chain_seq": seq + 1, "prev_hash": prev}
        _seal_personal(values, keys)
        values["row_hash"] = audit_chain.row_hash(values)
        bind.execute(
            _events.update()
            .where(_events.c.id == row["id"])
            .values(
                {name: values.get(name) for name in ("ip", "user_agent", "details", *NEW_COLUMNS)}
            )
        )
        heads[chain] = (seq + 1, values["row_hash"])
    now = dt.datetime.now(dt.UTC)
    if keys:
        bind.execute(
            _subject_keys.insert(),
            [{"subject": s, "key": k, "created_at": now} for s, k in keys.items()],
        )
    return heads


def _all_rows(bind: sa.Connection, page: int = 5000) -> Iterator[dict[str, Any]]:
    """Every row, oldest first, a page at a time (the table may be large)."""
    after = -1
    while True:
        rows = (
            bind.execute(
                sa.select(_events).where(_events.c.id > after).order_by(_events.c.id).limit(page)
            )
            .mappings()
            .all()
        )
        if not rows:
            return
        yield from (dict(row) for row in rows)
        after = rows[-1]["id"]


def _seal_personal(values: dict[str, Any], keys: dict[str, bytes]) -> None:
    """Seal a row's personal fields as control/audit/store.py's record() now does."""
    actor_type, actor_id = values["actor_type"], values["actor_id"]
    about_actor = {k: values[k] for k in ("ip", "user_agent") if values.get(k)}
    subject = None
    if actor_type == "member" and actor_id:
        subject = f"member:{actor_id}"
    elif actor_type == "operator" and actor_id:
        subject = actor_id if actor_id.startswith("operator:") else f"operator:{actor_id}"
    if about_actor and subject is not None:
        key = keys.setdefault(subject, os.urandom(32))
        aad = row_aad(values["chain"], values["chain_seq"], "actor")
        values.update(ip=None, user_agent=None, actor_subject=subject)
        values["actor_sealed"] = seal_fields(key, about_actor, aad)
    details = json.loads(values["details"])
    personal_of = {
        "tenant:create": ("name", f"tenant:{values['tenant_id']}"),
        "auth:handoff": ("subject", f"member:{actor_id}"),
    }
    if values["action"] in personal_of:
        name, owner = personal_of[values["action"]]
        if isinstance(details.get(name), str) and details[name] != SEALED:
            key = keys.setdefault(owner, os.urandom(32))
            aad = row_aad(values["chain"], values["chain_seq"], "details")
            values["details_sealed"] = seal_fields(key, {name: details[name]}, aad)
            values["details_subject"] = owner
            details[name] = SEALED
            values["details"] = json.dumps(details, sort_keys=True)


def downgrade() -> None:
    # Back to 0012's schema. The chain and the sealed fields are lost with their columns
    # and keys (the rows stay); personal fields sealed here are not restored in the clear.
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute("DROP TRIGGER audit_events_guard_update")
    op.drop_index("uq_audit_events_chain_seq", table_name="audit_events")
    for column in reversed(NEW_COLUMNS):
        op.drop_column("audit_events", column)
    op.drop_table("audit_chains")
    op.drop_table("subject_keys")
    if sqlite:
        frozen_before = "".join(f" AND NEW.{c} IS OLD.{c}" for c in NEW_COLUMNS)
        op.execute(SQLITE_GUARD.replace(frozen_before, ""))
