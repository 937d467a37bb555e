"""Invites (single-use, hashed tokens) and the email outbox; grader tokens on sessions.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from control.db.schema import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "invites",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "tenant_id", sa.String(36), sa.ForeignKey("tenants.id"), nullable=False, index=True
        ),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("candidate_email", sa.String(320), nullable=False),
        sa.Column("assessment_name", sa.String(200), nullable=False),
        sa.Column("session_minutes", sa.Integer, nullable=False),
        sa.Column("max_requests", sa.Integer),
        sa.Column("max_output_tokens", sa.Integer),
        sa.Column("allowed_models", sa.JSON),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("created_by", sa.String(100)),
        sa.Column("accepted_at", UTCDateTime),
        sa.Column("session_id", sa.String(36), sa.ForeignKey("sessions.id", ondelete="SET NULL")),
    )
    op.create_table(
        "email_outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(36)),
        sa.Column("to_email", sa.String(320), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    # A plain ADD COLUMN and a unique index: SQLite's batch mode would rebuild `sessions`,
    # which the audit triggers and foreign keys refer to.
    op.add_column("sessions", sa.Column("grader_token_hash", sa.String(64)))
    op.create_index("uq_sessions_grader_token_hash", "sessions", ["grader_token_hash"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_sessions_grader_token_hash", table_name="sessions")
    op.drop_column("sessions", "grader_token_hash")
    op.drop_table("email_outbox")
    op.drop_table("invites")
