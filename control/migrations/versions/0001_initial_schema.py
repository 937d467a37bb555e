"""Initial schema: tenants, members, api_keys, candidates, sessions, audit_events.

Revision ID: 0001
Revises:
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

from control.db.schema import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _id(name: str = "id", *args: Any, **kwargs: Any) -> sa.Column[str]:
    return sa.Column(name, sa.String(36), *args, **kwargs)


def upgrade() -> None:
    op.create_table(
        "tenants",
        _id(primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("closed_at", UTCDateTime),
    )
    op.create_table(
        "members",
        _id(primary_key=True),
        _id("tenant_id", sa.ForeignKey("tenants.id"), nullable=False, index=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("created_by", sa.String(100)),
        sa.Column("revoked_at", UTCDateTime),
        sa.CheckConstraint("role IN ('owner', 'admin', 'reviewer')", name="role_valid"),
    )
    op.create_table(
        "api_keys",
        _id(primary_key=True),
        _id("tenant_id", sa.ForeignKey("tenants.id"), nullable=False, index=True),
        sa.Column("name", sa.String(100)),
        sa.Column("kek_id", sa.String(200)),
        sa.Column("encrypted_data_key", sa.LargeBinary),
        sa.Column("nonce", sa.LargeBinary),
        sa.Column("ciphertext", sa.LargeBinary),
        sa.Column("format_version", sa.Integer, nullable=False),
        sa.Column("last_four", sa.String(4), nullable=False),
        sa.Column("fingerprint", sa.String(80), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("created_by", sa.String(100)),
        sa.Column("revoked_at", UTCDateTime),
        sa.Column("revoked_by", sa.String(100)),
    )
    op.create_index(
        "uq_api_keys_live_fingerprint",
        "api_keys",
        ["tenant_id", "fingerprint"],
        unique=True,
        sqlite_where=sa.text("revoked_at IS NULL"),
        postgresql_where=sa.text("revoked_at IS NULL"),
    )
    op.create_table(
        "candidates",
        _id(primary_key=True),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("last_active_at", UTCDateTime),
    )
    op.create_table(
        "sessions",
        _id(primary_key=True),
        _id("tenant_id", sa.ForeignKey("tenants.id"), nullable=False, index=True),
        _id("candidate_id", sa.ForeignKey("candidates.id", ondelete="SET NULL"), index=True),
        _id("api_key_id", sa.ForeignKey("api_keys.id"), index=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), unique=True),
        sa.Column("bootstrap_token_hash", sa.String(64), unique=True),
        sa.Column("bootstrap_used_at", UTCDateTime),
        sa.Column("deadline_at", UTCDateTime, nullable=False),
        sa.Column("max_requests", sa.Integer),
        sa.Column("max_output_tokens", sa.Integer),
        sa.Column("allowed_models", sa.JSON),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("created_by", sa.String(100)),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("ended_at", UTCDateTime),
        sa.CheckConstraint(
            "state IN ('issued', 'active', 'submitted', 'grading', 'graded', "
            "'ended', 'expired', 'revoked')",
            name="state_valid",
        ),
    )
    op.create_table(
        "audit_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("occurred_at", UTCDateTime, nullable=False),
        _id("tenant_id"),
        sa.Column("actor_type", sa.String(20), nullable=False),
        sa.Column("actor_id", sa.String(100)),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("target_type", sa.String(32)),
        sa.Column("target_id", sa.String(100)),
        _id("session_id", sa.ForeignKey("sessions.id", ondelete="SET NULL")),
        _id("session_id_text"),
        _id("candidate_id", sa.ForeignKey("candidates.id", ondelete="SET NULL")),
        _id("candidate_id_text"),
        sa.Column("ip", sa.String(64)),
        sa.Column("user_agent", sa.String(512)),
        sa.Column("request_id", sa.String(64)),
        sa.Column("details", sa.Text, nullable=False),
        sa.CheckConstraint("details NOT LIKE '%sk-ant-%'", name="details_no_anthropic_key"),
    )
    op.create_index("ix_audit_events_tenant_id_id", "audit_events", ["tenant_id", "id"])


def downgrade() -> None:
    raise RuntimeError("0001 is the initial schema; restore from a backup instead of downgrading")
