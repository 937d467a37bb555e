"""Audit retention: one privileged path removes archived rows past the retention floor.

Revision ID: 0015
Revises: 0014

- `audit_policy` holds the retention floor in days (730). Its guard lets it rise and
  refuses lowering it or deleting it: lowering is the database owner's act (docs/audit.md).
- `audit_chains` heads only move forward, and a chain's base (where its rows in the
  database start) may move only to a row older than the floor.
- A DELETE on `audit_events` is allowed only for a row at or before its chain's base (so
  recorded as archived) and older than the floor. Every other DELETE is refused, as before.
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

SQLITE_CUTOFF = (
    "strftime('%Y-%m-%d %H:%M:%f', 'now', "
    "'-' || (SELECT retention_days FROM audit_policy WHERE id = 1) || ' days')"
)

SQLITE = [
    "DROP TRIGGER audit_events_refuse_delete",
    f"""
    CREATE TRIGGER audit_events_refuse_delete BEFORE DELETE ON audit_events
    WHEN NOT (
        OLD.chain_seq <= (SELECT base_seq FROM audit_chains WHERE chain = OLD.chain)
        AND OLD.occurred_at < {SQLITE_CUTOFF}
    )
    BEGIN SELECT RAISE(ABORT, 'audit_events is append-only (DELETE refused)'); END
    """,
    f"""
    CREATE TRIGGER audit_chains_guard_update BEFORE UPDATE ON audit_chains
    WHEN NOT (
        NEW.chain = OLD.chain AND NEW.seq >= OLD.seq AND NEW.base_seq <= NEW.seq
        AND (
            (NEW.base_seq = OLD.base_seq AND NEW.base_hash = OLD.base_hash)
            OR (NEW.base_seq > OLD.base_seq AND EXISTS (
                SELECT 1 FROM audit_events
                WHERE chain = NEW.chain AND chain_seq = NEW.base_seq
                  AND row_hash = NEW.base_hash AND occurred_at < {SQLITE_CUTOFF}))
        )
    )
    BEGIN SELECT RAISE(ABORT, 'audit_chains only move forward (UPDATE refused)'); END
    """,
    """
    CREATE TRIGGER audit_chains_refuse_delete BEFORE DELETE ON audit_chains
    BEGIN SELECT RAISE(ABORT, 'audit_chains is append-only (DELETE refused)'); END
    """,
    """
    CREATE TRIGGER audit_policy_guard_update BEFORE UPDATE ON audit_policy
    WHEN NOT (NEW.id = OLD.id AND NEW.retention_days >= OLD.retention_days)
    BEGIN SELECT RAISE(ABORT, 'the audit retention floor only rises (UPDATE refused)'); END
    """,
    """
    CREATE TRIGGER audit_policy_refuse_delete BEFORE DELETE ON audit_policy
    BEGIN SELECT RAISE(ABORT, 'audit_policy is kept (DELETE refused)'); END
    """,
]

PG_CUTOFF = "now() - make_interval(days => (SELECT retention_days FROM audit_policy WHERE id = 1))"

POSTGRES = [
    # The 0002 guard, with the one DELETE it now allows.
    f"""
    CREATE OR REPLACE FUNCTION audit_events_guard() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'DELETE'
         AND OLD.chain_seq <= (SELECT base_seq FROM audit_chains WHERE chain = OLD.chain)
         AND OLD.occurred_at < {PG_CUTOFF}
      THEN
        RETURN OLD;
      END IF;
      IF TG_OP = 'UPDATE'
         AND (to_jsonb(NEW) - 'session_id' - 'candidate_id')
             = (to_jsonb(OLD) - 'session_id' - 'candidate_id')
         AND (NEW.session_id IS NOT DISTINCT FROM OLD.session_id
              OR (NEW.session_id IS NULL
                  AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.id = OLD.session_id)))
         AND (NEW.candidate_id IS NOT DISTINCT FROM OLD.candidate_id
              OR (NEW.candidate_id IS NULL
                  AND NOT EXISTS (SELECT 1 FROM candidates c WHERE c.id = OLD.candidate_id)))
         AND (NEW.session_id IS DISTINCT FROM OLD.session_id
              OR NEW.candidate_id IS DISTINCT FROM OLD.candidate_id)
      THEN
        RETURN NEW;
      END IF;
      RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
    END $$
    """,
    f"""
    CREATE FUNCTION audit_chains_guard() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'UPDATE' AND NEW.chain = OLD.chain AND NEW.seq >= OLD.seq
         AND NEW.base_seq <= NEW.seq
         AND ((NEW.base_seq = OLD.base_seq AND NEW.base_hash = OLD.base_hash)
              OR (NEW.base_seq > OLD.base_seq AND EXISTS (
                    SELECT 1 FROM audit_events e
                    WHERE e.chain = NEW.chain AND e.chain_seq = NEW.base_seq
                      AND e.row_hash = NEW.base_hash AND e.occurred_at < {PG_CUTOFF})))
      THEN
        RETURN NEW;
      END IF;
      RAISE EXCEPTION 'audit_chains only move forward (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
    END $$
    """,
    """
    CREATE TRIGGER audit_chains_guard BEFORE UPDATE OR DELETE ON audit_chains
    FOR EACH ROW EXECUTE FUNCTION audit_chains_guard()
    """,
    "ALTER TABLE audit_chains ENABLE ALWAYS TRIGGER audit_chains_guard",
    """
    CREATE FUNCTION audit_policy_guard() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'UPDATE' AND NEW.id = OLD.id AND NEW.retention_days >= OLD.retention_days
      THEN
        RETURN NEW;
      END IF;
      RAISE EXCEPTION 'the audit retention floor only rises (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
    END $$
    """,
    """
    CREATE TRIGGER audit_policy_guard BEFORE UPDATE OR DELETE ON audit_policy
    FOR EACH ROW EXECUTE FUNCTION audit_policy_guard()
    """,
    "ALTER TABLE audit_policy ENABLE ALWAYS TRIGGER audit_policy_guard",
]


def upgrade() -> None:
    op.create_table(
        "audit_policy",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("retention_days", sa.Integer, nullable=False),
        sa.CheckConstraint("id = 1", name="single_row"),
        sa.CheckConstraint("retention_days >= 1", name="positive_days"),
    )
    op.execute("INSERT INTO audit_policy (id, retention_days) VALUES (1, 730)")
    statements = {"sqlite": SQLITE, "postgresql": POSTGRES}[op.get_bind().dialect.name]
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in (
            "audit_policy_refuse_delete",
            "audit_policy_guard_update",
            "audit_chains_refuse_delete",
            "audit_chains_guard_update",
            "audit_events_refuse_delete",
        ):
            op.execute(f"DROP TRIGGER {trigger}")
        op.execute(
            "CREATE TRIGGER audit_events_refuse_delete BEFORE DELETE ON audit_events "
            "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only (DELETE refused)'); END"
        )
    else:
        op.execute("DROP TRIGGER audit_policy_guard ON audit_policy")
        op.execute("DROP FUNCTION audit_policy_guard()")
        op.execute("DROP TRIGGER audit_chains_guard ON audit_chains")
        op.execute("DROP FUNCTION audit_chains_guard()")
        op.execute(
            "CREATE OR REPLACE FUNCTION audit_events_guard() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            "IF TG_OP = 'UPDATE' "
            "AND (to_jsonb(NEW) - 'session_id' - 'candidate_id') "
            "= (to_jsonb(OLD) - 'session_id' - 'candidate_id') "
            "AND (NEW.session_id IS NOT DISTINCT FROM OLD.session_id "
            "OR (NEW.session_id IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.id = OLD.session_id))) "
            "AND (NEW.candidate_id IS NOT DISTINCT FROM OLD.candidate_id "
            "OR (NEW.candidate_id IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM candidates c WHERE c.id = OLD.candidate_id))) "
            "AND (NEW.session_id IS DISTINCT FROM OLD.session_id "
            "OR NEW.candidate_id IS DISTINCT FROM OLD.candidate_id) "
            "THEN RETURN NEW; END IF; "
            "RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP "
            "USING ERRCODE = 'insufficient_privilege'; END $$"
        )
    op.drop_table("audit_policy")
