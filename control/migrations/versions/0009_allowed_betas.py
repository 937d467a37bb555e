"""Per-session allowlist of anthropic-beta values (NULL: pass all).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sessions", sa.Column("allowed_betas", sa.JSON))
    op.add_column("invites", sa.Column("allowed_betas", sa.JSON))


def downgrade() -> None:
    op.drop_column("invites", "allowed_betas")
    op.drop_column("sessions", "allowed_betas")
