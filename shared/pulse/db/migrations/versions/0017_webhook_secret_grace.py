"""webhooks: the previous signing secret and when it was replaced, for the rotation's grace period

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Deliveries carry a signature with the previous secret too until PULSE_WEBHOOK_SECRET_GRACE_HOURS
    # after the rotation.
    op.add_column("tenants", sa.Column("previous_webhook_secret", sa.String(100), nullable=True))
    op.add_column(
        "tenants", sa.Column("webhook_secret_rotated_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("tenants", "webhook_secret_rotated_at")
    op.drop_column("tenants", "previous_webhook_secret")
