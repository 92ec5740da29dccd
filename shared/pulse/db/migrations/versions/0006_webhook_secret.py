"""webhooks: each tenant's Standard Webhooks signing secret

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL until first asked for (GET /v1/webhook-secret, or the first webhook sent).
    op.add_column("tenants", sa.Column("webhook_secret", sa.String(100), nullable=True))


def downgrade() -> None:
    op.drop_column("tenants", "webhook_secret")
