"""The audit log becomes tamper-evident: each tenant's rows form a hash chain.

Revision ID: 0013
Revises: 0012

Adds chain, chain_seq, prev_hash and row_hash to audit_events and the audit_chains heads,
then chains the rows already there, oldest first (control/audit/chain.py). Filling the new
columns of existing rows is an UPDATE the append-only guard refuses, so this migration,
run by the database owner, lifts the guard for that one statement per row and puts it back:
on SQLite the UPDATE guard is recreated with the new columns frozen too; on Postgres the
guard compares whole rows and is re-enabled ALWAYS.
"""

import sqlalchemy as sa
from alembic import op

from control.audit import chain as audit_chain
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
    "chain",
    "chain_seq",
    "prev_hash",
    "row_hash",
)

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
    rows = bind.execute(sa.select(_events).order_by(_events.c.id)).mappings().all()
    for row in rows:
        chain = audit_chain.chain_of(row["tenant_id"])
        seq, prev = heads.get(chain, (0, audit_chain.GENESIS))
        values = {**row, "chain": chain, "chain_seq": seq + 1, "prev_hash": prev}
        values["row_hash"] = audit_chain.row_hash(values)
        bind.execute(
            _events.update()
            .where(_events.c.id == row["id"])
            .values(
                chain=chain,
                chain_seq=seq + 1,
                prev_hash=prev,
                row_hash=values["row_hash"],
            )
        )
        heads[chain] = (seq + 1, values["row_hash"])
    return heads


def downgrade() -> None:
    # Back to 0012's schema (the chain is lost with its columns; the rows stay).
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute("DROP TRIGGER audit_events_guard_update")
    op.drop_index("uq_audit_events_chain_seq", table_name="audit_events")
    for column in ("row_hash", "prev_hash", "chain_seq", "chain"):
        op.drop_column("audit_events", column)
    op.drop_table("audit_chains")
    if sqlite:
        chained = "".join(f"NEW.{c} IS OLD.{c} AND " for c in ("chain", "chain_seq", "prev_hash"))
        op.execute(
            SQLITE_GUARD.replace(chained, "").replace(" AND NEW.row_hash IS OLD.row_hash", "")
        )
