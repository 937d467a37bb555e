"""Privacy lifecycle: candidate tokens and erasure keys, soft-deleted sessions, deletion
requests, tenant anonymisation, platform operators, sealed candidate IPs in audit rows.

Revision ID: 0006
Revises: 0005

The SQLite audit UPDATE guard lists the frozen columns by name, so it is recreated with the
two new sealed columns among them (Postgres compares whole rows as JSON and needs nothing).
"""

import sqlalchemy as sa
from alembic import op

from control.db.schema import UTCDateTime

revision = "0006"
down_revision = "0005"
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


def upgrade() -> None:
    op.add_column("tenants", sa.Column("anonymised_at", UTCDateTime))
    op.add_column("candidates", sa.Column("token_hash", sa.String(64)))
    op.create_index("uq_candidates_token_hash", "candidates", ["token_hash"], unique=True)
    op.add_column("candidates", sa.Column("erasure_key", sa.LargeBinary))
    op.add_column("candidates", sa.Column("deletion_notice_at", UTCDateTime))
    op.add_column("sessions", sa.Column("soft_deleted_at", UTCDateTime))
    op.create_index("ix_sessions_ended_at", "sessions", ["ended_at"])
    op.add_column("audit_events", sa.Column("ip_sealed", sa.LargeBinary))
    op.add_column("audit_events", sa.Column("user_agent_sealed", sa.LargeBinary))
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER audit_events_guard_update")
        op.execute(SQLITE_GUARD)
    op.create_table(
        "deletion_requests",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "candidate_id",
            sa.String(36),
            sa.ForeignKey("candidates.id", ondelete="SET NULL"),
            index=True,
        ),
        sa.Column("candidate_id_text", sa.String(36), nullable=False),
        sa.Column("requested_at", UTCDateTime, nullable=False),
        sa.Column("due_at", UTCDateTime, nullable=False),
        sa.Column("completed_at", UTCDateTime),
    )
    op.create_table(
        "operators",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("revoked_at", UTCDateTime),
    )


def downgrade() -> None:
    op.drop_table("operators")
    op.drop_table("deletion_requests")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER audit_events_guard_update")
    op.drop_column("audit_events", "user_agent_sealed")
    op.drop_column("audit_events", "ip_sealed")
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            SQLITE_GUARD.replace("NEW.ip_sealed IS OLD.ip_sealed AND ", "").replace(
                "NEW.user_agent_sealed IS OLD.user_agent_sealed AND ", ""
            )
        )
    op.drop_index("ix_sessions_ended_at", table_name="sessions")
    op.drop_column("sessions", "soft_deleted_at")
    op.drop_column("candidates", "deletion_notice_at")
    op.drop_column("candidates", "erasure_key")
    op.drop_index("uq_candidates_token_hash", table_name="candidates")
    op.drop_column("candidates", "token_hash")
    op.drop_column("tenants", "anonymised_at")
