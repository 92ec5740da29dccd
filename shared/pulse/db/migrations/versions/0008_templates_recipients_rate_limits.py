"""templates, recipient profiles, rate limits, priority defaults and status callbacks

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_NOW = sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "templates",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("variables", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("priority", sa.String(16), nullable=True),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "name", name="uq_templates_tenant_name"),
    )
    op.create_table(
        "recipients",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("phone", sa.String(32), nullable=True),
        sa.Column("push_tokens", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=True),
        sa.Column("quiet_hours", sa.String(32), nullable=True),
        sa.Column("locale", sa.String(35), nullable=True),
        sa.Column(
            "preferences",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", "user_id"),
    )
    # Counters are short-lived and rebuilt by traffic: UNLOGGED skips the write-ahead log (a crash
    # empties the table, which only forgets the current minute's counts).
    op.create_table(
        "rate_limit_counters",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "channel", "subject"),
        prefixes=["UNLOGGED"],
    )
    op.create_index("ix_rate_limit_counters_window_start", "rate_limit_counters", ["window_start"])
    op.add_column("tenants", sa.Column("default_priority", sa.String(16), nullable=True))
    op.add_column("tenants", sa.Column("rate_limit", sa.Integer(), nullable=True))
    op.add_column("tenants", sa.Column("rate_limit_window_seconds", sa.Integer(), nullable=True))
    op.add_column("notifications", sa.Column("template", sa.String(100), nullable=True))
    op.add_column("notifications", sa.Column("callback_for", sa.UUID(), nullable=True))
    op.create_foreign_key(
        "notifications_callback_for_fkey",
        "notifications",
        "notifications",
        ["callback_for"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_index(
        "ix_notifications_callback_for",
        "notifications",
        ["callback_for"],
        postgresql_where=sa.text("callback_for IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_callback_for", table_name="notifications")
    op.drop_constraint("notifications_callback_for_fkey", "notifications", type_="foreignkey")
    op.drop_column("notifications", "callback_for")
    op.drop_column("notifications", "template")
    for column in ("rate_limit_window_seconds", "rate_limit", "default_priority"):
        op.drop_column("tenants", column)
    op.drop_table("rate_limit_counters")
    op.drop_table("recipients")
    op.drop_table("templates")
