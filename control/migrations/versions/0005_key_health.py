"""Key health and default keys: status, check schedule, is_default on api_keys.

Revision ID: 0005
Revises: 0004

Existing keys start `unverified` and due for a check now, so the key-health checker
validates them on its first pass. The newest live key of each tenant, which sessions used
by default until now, becomes its default key.

Plain ADD COLUMNs: SQLite's batch mode would rebuild `api_keys`, which `sessions`
refers to; the status CHECK is therefore added on Postgres only.
"""

import sqlalchemy as sa
from alembic import op

from control.db.schema import KEY_STATUSES, UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "api_keys",
        sa.Column("status", sa.String(16), nullable=False, server_default="unverified"),
    )
    op.add_column("api_keys", sa.Column("status_reason", sa.String(64)))
    op.add_column("api_keys", sa.Column("last_checked_at", UTCDateTime))
    op.add_column("api_keys", sa.Column("next_check_at", UTCDateTime))
    op.add_column(
        "api_keys",
        sa.Column("check_attempts", sa.Integer, nullable=False, server_default="0"),
    )
    op.add_column(
        "api_keys",
        sa.Column("is_default", sa.Boolean, nullable=False, server_default=sa.text("false")),
    )
    op.create_index("ix_api_keys_next_check_at", "api_keys", ["next_check_at"])
    op.create_index(
        "uq_api_keys_default",
        "api_keys",
        ["tenant_id"],
        unique=True,
        sqlite_where=sa.text("is_default"),
        postgresql_where=sa.text("is_default"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.create_check_constraint(
            "ck_api_keys_status_valid",
            "api_keys",
            f"status IN ({', '.join(repr(s) for s in KEY_STATUSES)})",
        )
    op.execute("UPDATE api_keys SET status = 'revoked' WHERE revoked_at IS NOT NULL")
    op.execute("UPDATE api_keys SET next_check_at = CURRENT_TIMESTAMP WHERE revoked_at IS NULL")
    op.execute(
        """
        UPDATE api_keys SET is_default = true
        WHERE revoked_at IS NULL AND id = (
            SELECT k.id FROM api_keys k
            WHERE k.tenant_id = api_keys.tenant_id AND k.revoked_at IS NULL
            ORDER BY k.created_at DESC, k.id LIMIT 1
        )
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("ck_api_keys_status_valid", "api_keys", type_="check")
    op.drop_index("uq_api_keys_default", table_name="api_keys")
    op.drop_index("ix_api_keys_next_check_at", table_name="api_keys")
    for column in (
        "is_default",
        "check_attempts",
        "next_check_at",
        "last_checked_at",
        "status_reason",
        "status",
    ):
        op.drop_column("api_keys", column)
