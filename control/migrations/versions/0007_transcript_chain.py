"""The transcript digest chain on usage records; short-lived report links.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from control.db.schema import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("usage_records", sa.Column("chain_seq", sa.Integer))
    op.add_column("usage_records", sa.Column("chain_prev", sa.String(64)))
    op.add_column("usage_records", sa.Column("chain_link", sa.String(64)))
    op.create_index(
        "ix_usage_records_session_id_chain_seq", "usage_records", ["session_id", "chain_seq"]
    )
    op.create_table(
        "report_links",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column(
            "session_id",
            sa.String(36),
            sa.ForeignKey("sessions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("created_by", sa.String(100)),
    )


def downgrade() -> None:
    op.drop_table("report_links")
    op.drop_index("ix_usage_records_session_id_chain_seq", table_name="usage_records")
    for column in ("chain_link", "chain_prev", "chain_seq"):
        op.drop_column("usage_records", column)
