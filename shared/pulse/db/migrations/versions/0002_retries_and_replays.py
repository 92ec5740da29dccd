"""retries and dead-letter replays

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "notifications",
        sa.Column("attempts_before_replay", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column(
        "notifications", sa.Column("replay_count", sa.Integer(), server_default=sa.text("0"), nullable=False)
    )
    op.add_column("notifications", sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("notifications", sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_notifications_retry_due",
        "notifications",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'retrying'"),
    )
    op.create_index(
        "ix_notifications_failed",
        "notifications",
        ["tenant_id", "channel", sa.literal_column("failed_at DESC")],
        postgresql_where=sa.text("status = 'failed'"),
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_failed", table_name="notifications")
    op.drop_index("ix_notifications_retry_due", table_name="notifications")
    op.drop_column("notifications", "failed_at")
    op.drop_column("notifications", "next_attempt_at")
    op.drop_column("notifications", "replay_count")
    op.drop_column("notifications", "attempts_before_replay")
