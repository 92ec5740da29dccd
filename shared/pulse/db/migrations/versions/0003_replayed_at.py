"""when a notification was last replayed; failed_at for notifications failed before 0002

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("notifications", sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_notifications_replayed",
        "notifications",
        ["channel", "replayed_at"],
        postgresql_where=sa.text("replayed_at IS NOT NULL"),
    )
    # Failed before failed_at existed: their last update was the failure.
    op.execute(
        "UPDATE notifications SET failed_at = updated_at WHERE status = 'failed' AND failed_at IS NULL"
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_replayed", table_name="notifications")
    op.drop_column("notifications", "replayed_at")
