"""fairness: stuck queued rows found by index

Revision ID: 0010
Revises: 0008
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The scheduler's sweep of `queued` rows whose message never reached a worker.
    op.create_index(
        "ix_notifications_queued_updated",
        "notifications",
        ["updated_at"],
        postgresql_where=sa.text("status = 'queued'"),
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_queued_updated", table_name="notifications")
