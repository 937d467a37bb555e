"""Browser sessions for members signed in through the identity provider.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

from control.db.schema import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "member_sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column(
            "member_id",
            sa.String(36),
            sa.ForeignKey("members.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("csrf_hash", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(255)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("revoked_at", UTCDateTime),
        sa.Column("revoked_reason", sa.String(32)),
    )
    op.create_index("ix_member_sessions_member_id", "member_sessions", ["member_id"])


def downgrade() -> None:
    op.drop_index("ix_member_sessions_member_id", table_name="member_sessions")
    op.drop_table("member_sessions")
