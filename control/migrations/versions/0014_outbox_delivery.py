"""The email outbox remembers when a message was delivered (printed by `metrux control
outbox`): its links are then kept only as hashes, and the retention worker purges it.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

from control.db.schema import UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("email_outbox", sa.Column("delivered_at", UTCDateTime))
    op.add_column("invites", sa.Column("email_erased_at", UTCDateTime))


def downgrade() -> None:
    op.drop_column("invites", "email_erased_at")
    op.drop_column("email_outbox", "delivered_at")
