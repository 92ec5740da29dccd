"""scheduling: quiet hours per tenant, recurring schedules

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "tenants", sa.Column("timezone", sa.String(64), server_default=sa.text("'UTC'"), nullable=False)
    )
    op.add_column("tenants", sa.Column("quiet_hours", sa.String(32), nullable=True))
    op.create_table(
        "schedules",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("cron", sa.String(120), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("notification", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("paused", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("run_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_schedules_tenant_id", "schedules", ["tenant_id"])
    op.create_index("ix_schedules_due", "schedules", ["next_run_at"], postgresql_where=sa.text("NOT paused"))
    op.add_column(
        "notifications",
        sa.Column("respect_quiet_hours", sa.Boolean(), server_default=sa.text("true"), nullable=False),
    )
    op.add_column("notifications", sa.Column("schedule_id", sa.UUID(), nullable=True))
    op.create_foreign_key(
        "notifications_schedule_id_fkey",
        "notifications",
        "schedules",
        ["schedule_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_index("ix_notifications_schedule_id", "notifications", ["schedule_id"])
    # Retention scans finished notifications by age.
    op.create_index(
        "ix_notifications_finished_updated",
        "notifications",
        ["updated_at"],
        postgresql_where=sa.text("status IN ('delivered', 'failed', 'cancelled', 'read')"),
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_finished_updated", table_name="notifications")
    op.drop_index("ix_notifications_schedule_id", table_name="notifications")
    op.drop_constraint("notifications_schedule_id_fkey", "notifications", type_="foreignkey")
    op.drop_column("notifications", "schedule_id")
    op.drop_column("notifications", "respect_quiet_hours")
    op.drop_index("ix_schedules_due", table_name="schedules")
    op.drop_index("ix_schedules_tenant_id", table_name="schedules")
    op.drop_table("schedules")
    op.drop_column("tenants", "quiet_hours")
    op.drop_column("tenants", "timezone")
