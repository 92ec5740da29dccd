"""in-app channel: inbox indexes over the inapp notification rows, escalation of unread ones

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_INBOX_ORDER: list[str | sa.TextClause] = [
    "tenant_id",
    "recipient",
    sa.text("created_at DESC"),
    sa.text("id DESC"),
]


def upgrade() -> None:
    # A user's inbox is their delivered (unread) and read inapp notifications, newest first; the
    # unread ones get an index of their own for the unread count and the missed items on connect.
    op.create_index(
        "ix_notifications_inbox",
        "notifications",
        _INBOX_ORDER,
        postgresql_where=sa.text("channel = 'inapp' AND status IN ('delivered', 'read')"),
    )
    op.create_index(
        "ix_notifications_inbox_unread",
        "notifications",
        _INBOX_ORDER,
        postgresql_where=sa.text("channel = 'inapp' AND status = 'delivered'"),
    )
    # The escalation plan of an inapp send and, once decided, its outcome; escalate_at is set while
    # it is pending (cleared once decided), which keeps the scheduler's index small.
    op.add_column("notifications", sa.Column("escalation", JSONB(), nullable=True))
    op.add_column("notifications", sa.Column("escalate_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "notifications",
        sa.Column(
            "escalated_from",
            sa.UUID(),
            sa.ForeignKey("notifications.id", ondelete="SET NULL"),
            nullable=True,
        ),
    )
    op.create_index(
        "ix_notifications_escalation_due",
        "notifications",
        ["escalate_at"],
        postgresql_where=sa.text("escalate_at IS NOT NULL"),
    )
    op.create_index(
        "ix_notifications_escalated_from",
        "notifications",
        ["escalated_from"],
        postgresql_where=sa.text("escalated_from IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_escalated_from", table_name="notifications")
    op.drop_index("ix_notifications_escalation_due", table_name="notifications")
    op.drop_column("notifications", "escalated_from")
    op.drop_column("notifications", "escalate_at")
    op.drop_column("notifications", "escalation")
    op.drop_index("ix_notifications_inbox_unread", table_name="notifications")
    op.drop_index("ix_notifications_inbox", table_name="notifications")
