"""Make audit_events append-only with database triggers, on SQLite and on Postgres.

DELETE is refused. UPDATE is refused except the one a hard-delete causes: ON DELETE SET NULL
of session_id or candidate_id once that session or candidate is gone, every other column
unchanged (the *_text columns keep the ids). A plain "refuse UPDATE" trigger would make the
hard-delete itself fail (SECURITY-CHECKS.md A4, E8, E9). On Postgres TRUNCATE is refused too,
and the triggers are ENABLE ALWAYS so session_replication_role=replica does not skip them.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Every column but the two nullable foreign keys: none of these may ever change.
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
    "request_id",
    "details",
)

SQLITE = [
    """
    CREATE TRIGGER audit_events_refuse_delete BEFORE DELETE ON audit_events
    BEGIN SELECT RAISE(ABORT, 'audit_events is append-only (DELETE refused)'); END
    """,
    f"""
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
    """,
]

POSTGRES = [
    """
    CREATE FUNCTION audit_events_guard() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
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
    """
    CREATE FUNCTION audit_events_refuse_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      RAISE EXCEPTION 'audit_events is append-only (TRUNCATE refused)'
        USING ERRCODE = 'insufficient_privilege';
    END $$
    """,
    """
    CREATE TRIGGER audit_events_guard BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_guard()
    """,
    """
    CREATE TRIGGER audit_events_refuse_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse_truncate()
    """,
    "ALTER TABLE audit_events ENABLE ALWAYS TRIGGER audit_events_guard",
    "ALTER TABLE audit_events ENABLE ALWAYS TRIGGER audit_events_refuse_truncate",
]


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    statements = {"sqlite": SQLITE, "postgresql": POSTGRES}.get(dialect)
    if statements is None:
        raise RuntimeError(f"no append-only audit triggers written for {dialect}")
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    raise RuntimeError("the audit log stays append-only: this revision is not reversible")
