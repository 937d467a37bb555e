"""Usage records: one row per upstream call a proxy made, ingested from the Redis stream.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from control.db.schema import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_records",
        sa.Column("record_id", sa.String(64), primary_key=True),
        sa.Column(
            "session_id",
            sa.String(36),
            sa.ForeignKey("sessions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("actor", sa.String(16), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("endpoint", sa.String(200), nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("stream", sa.Boolean, nullable=False),
        sa.Column("http_status", sa.Integer),
        sa.Column("complete", sa.Boolean, nullable=False),
        sa.Column("model_requested", sa.String(200)),
        sa.Column("model_served", sa.String(200)),
        sa.Column("upstream_request_id", sa.String(200)),
        sa.Column("stop_reason", sa.String(64)),
        sa.Column("input_tokens", sa.Integer),
        sa.Column("output_tokens", sa.Integer),
        sa.Column("cache_creation_input_tokens", sa.Integer),
        sa.Column("cache_read_input_tokens", sa.Integer),
        sa.Column("usage", sa.JSON),
        sa.Column("ttfb_ms", sa.Float),
        sa.Column("latency_ms", sa.Float),
        sa.Column("bytes_in", sa.BigInteger, nullable=False),
        sa.Column("bytes_out", sa.BigInteger, nullable=False),
        sa.Column("request_sha256", sa.String(64)),
        sa.Column("system_sha256", sa.String(64)),
        sa.Column("message_sha256s", sa.JSON),
        sa.Column("response_sha256", sa.String(64)),
        sa.Column("response_content_sha256", sa.String(64)),
        sa.Column("error_type", sa.String(64)),
        sa.Column("ingested_at", UTCDateTime, nullable=False),
    )
    op.create_index(
        "ix_usage_records_session_id_started_at", "usage_records", ["session_id", "started_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_usage_records_session_id_started_at", table_name="usage_records")
    op.drop_table("usage_records")
