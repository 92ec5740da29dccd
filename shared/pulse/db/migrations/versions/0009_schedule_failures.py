"""schedules: failed runs recorded (last_error, consecutive_failures) and the reason a schedule is paused

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("schedules", sa.Column("paused_reason", sa.String(16), nullable=True))
    op.add_column(
        "schedules",
        sa.Column("consecutive_failures", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column("schedules", sa.Column("last_error", sa.Text(), nullable=True))
    op.add_column("schedules", sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True))
    # Schedules paused so far were paused through the API (or, rarely, for a stored notification
    # that no longer validated): resuming is the way out either way.
    op.execute("UPDATE schedules SET paused_reason = 'requested' WHERE paused")


def downgrade() -> None:
    for column in ("last_error_at", "last_error", "consecutive_failures", "paused_reason"):
        op.drop_column("schedules", column)
