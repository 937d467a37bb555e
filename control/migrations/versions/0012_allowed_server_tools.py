"""Per-session allowlist of Anthropic's server-side tools (NULL: all).

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sessions", sa.Column("allowed_server_tools", sa.JSON))
    op.add_column("invites", sa.Column("allowed_server_tools", sa.JSON))


def downgrade() -> None:
    op.drop_column("invites", "allowed_server_tools")
    op.drop_column("sessions", "allowed_server_tools")
