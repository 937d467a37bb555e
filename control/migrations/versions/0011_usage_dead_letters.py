"""Usage records the database refused, kept with the reason instead of blocking ingestion.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

from control.db.schema import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_dead_letters",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("stream_entry_id", sa.String(64), nullable=False),
        sa.Column("record_id", sa.String(64)),
        sa.Column("session_id", sa.String(36)),
        sa.Column("tenant_id", sa.String(36)),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("usage_dead_letters")
