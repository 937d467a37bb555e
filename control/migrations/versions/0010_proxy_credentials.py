"""Attached proxies' credentials, the session's proxy epoch, and each call's reservation.

Each attach issues a new `mxp_` credential (only its hash is stored) under the next epoch
and fences the previous one: a fenced proxy is told to stop, and may only deliver the
records of calls it started before its fence.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

from control.db.schema import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "sessions", sa.Column("proxy_epoch", sa.Integer, nullable=False, server_default="0")
    )
    op.add_column("usage_records", sa.Column("reserved_output_tokens", sa.Integer))
    op.create_table(
        "proxy_credentials",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column(
            "session_id",
            sa.String(36),
            sa.ForeignKey("sessions.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("issued_at", UTCDateTime, nullable=False),
        sa.Column("fenced_at", UTCDateTime),
    )


def downgrade() -> None:
    op.drop_table("proxy_credentials")
    op.drop_column("usage_records", "reserved_output_tokens")
    op.drop_column("sessions", "proxy_epoch")
