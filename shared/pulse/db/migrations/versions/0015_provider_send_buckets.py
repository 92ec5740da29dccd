"""provider send-rate buckets: one token bucket per provider account (and webhook receiver host),
shared by every worker

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Unlogged: written on every batch; after a crash the buckets simply start full again.
    op.create_table(
        "provider_send_buckets",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("refilled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("slowdown", sa.Float(), server_default=sa.text("1"), nullable=False),
        sa.PrimaryKeyConstraint("key"),
        prefixes=["UNLOGGED"],
    )


def downgrade() -> None:
    op.drop_table("provider_send_buckets")
