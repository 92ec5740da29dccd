"""digests: many sends of one (tenant, user, channel, key) collected into one notification

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "digests",
        # The combined notification's id: the digest goes with it (retention, tenant deletion).
        sa.Column(
            "id",
            sa.UUID(),
            sa.ForeignKey("notifications.id", ondelete="CASCADE", deferrable=True, initially="DEFERRED"),
            primary_key=True,
        ),
        sa.Column("tenant_id", sa.UUID(), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("request", postgresql.JSONB(), nullable=False),
        sa.Column("max_events", sa.Integer(), nullable=False),
        sa.Column("event_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("event_bytes", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closes_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
    )
    # At most one open digest per (tenant, user, channel, key): concurrent first sends meet here.
    op.create_index(
        "uq_digests_open",
        "digests",
        ["tenant_id", "user_id", "channel", "key"],
        unique=True,
        postgresql_where=sa.text("closed_at IS NULL"),
    )
    op.create_index("ix_digests_due", "digests", ["closes_at"], postgresql_where=sa.text("closed_at IS NULL"))
    op.create_table(
        "digest_events",
        sa.Column("digest_id", sa.UUID(), sa.ForeignKey("digests.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("number", sa.Integer(), primary_key=True),
        sa.Column("variables", postgresql.JSONB(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("digest_events")
    op.drop_table("digests")
