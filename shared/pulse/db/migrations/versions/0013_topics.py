"""topics: per-tenant topic subscriptions, fan-outs (a send to every subscriber of a topic, created
in chunks by the scheduler) and the notifications' link to their fan-out

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The primary key is also the index a fan-out walks (keyset on user_id) and a topic is counted by.
    op.create_table(
        "topic_subscriptions",
        sa.Column("tenant_id", sa.UUID(), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("topic", sa.String(128), primary_key=True),
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_table(
        "fanouts",
        sa.Column("id", sa.UUID(), primary_key=True),
        sa.Column("tenant_id", sa.UUID(), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("topic", sa.String(128), nullable=False),
        sa.Column("notification", JSONB(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.Column("created", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("skipped", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("skipped_reasons", JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("last_user_id", sa.String(255), nullable=True),
        sa.Column("resume_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_fanouts_running", "fanouts", ["resume_at"], postgresql_where=sa.text("status = 'running'")
    )
    op.add_column(
        "notifications",
        sa.Column("fanout_id", sa.UUID(), sa.ForeignKey("fanouts.id", ondelete="SET NULL"), nullable=True),
    )
    # One notification per subscriber and fan-out, whatever a crash or a second runner repeats.
    op.create_index(
        "uq_notifications_fanout_user",
        "notifications",
        ["fanout_id", "user_id"],
        unique=True,
        postgresql_where=sa.text("fanout_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_notifications_fanout_user", table_name="notifications")
    op.drop_column("notifications", "fanout_id")
    op.drop_table("fanouts")
    op.drop_table("topic_subscriptions")
