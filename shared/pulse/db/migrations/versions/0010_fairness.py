"""fairness between tenants: per-tenant quota, invalid push tokens per tenant, indexes for the
scheduler's sweep of stuck queued rows and for a tenant's analytics

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_FINISHED = sa.text("status IN ('delivered', 'failed', 'cancelled', 'read')")


def upgrade() -> None:
    op.add_column("tenants", sa.Column("sends_per_minute", sa.Integer(), nullable=True))
    # The scheduler's sweep of `queued` rows whose message never reached a worker.
    op.create_index(
        "ix_notifications_queued_updated",
        "notifications",
        ["updated_at"],
        postgresql_where=sa.text("status = 'queued'"),
    )
    # A tenant's analytics (deliveries and failures per minute) without scanning every tenant's
    # recently finished rows.
    op.create_index(
        "ix_notifications_tenant_finished_updated",
        "notifications",
        ["tenant_id", "updated_at"],
        postgresql_where=_FINISHED,
    )
    # A token FCM refused is refused for the tenant that sent to it, not for everybody. Marks are
    # kept for the tenants whose push notifications to the token failed, and only for UNREGISTERED:
    # an INVALID_ARGUMENT may have been about the message rather than the token (FCM says again
    # at the next send if the token is dead).
    op.add_column("invalid_push_tokens", sa.Column("tenant_id", sa.UUID(), nullable=True))
    op.drop_constraint("invalid_push_tokens_pkey", "invalid_push_tokens", type_="primary")
    op.execute(
        """
        INSERT INTO invalid_push_tokens (tenant_id, token, reason, invalidated_at)
        SELECT DISTINCT n.tenant_id, t.token, t.reason, t.invalidated_at
        FROM invalid_push_tokens AS t
        JOIN notifications AS n ON n.channel = 'push' AND n.recipient = t.token AND n.status = 'failed'
        WHERE t.tenant_id IS NULL AND t.reason = 'UNREGISTERED'
        """
    )
    op.execute("DELETE FROM invalid_push_tokens WHERE tenant_id IS NULL")
    op.alter_column("invalid_push_tokens", "tenant_id", nullable=False)
    op.create_primary_key("invalid_push_tokens_pkey", "invalid_push_tokens", ["tenant_id", "token"])
    op.create_foreign_key(
        "invalid_push_tokens_tenant_id_fkey",
        "invalid_push_tokens",
        "tenants",
        ["tenant_id"],
        ["id"],
        ondelete="CASCADE",
    )


def downgrade() -> None:
    op.drop_constraint("invalid_push_tokens_tenant_id_fkey", "invalid_push_tokens", type_="foreignkey")
    op.drop_constraint("invalid_push_tokens_pkey", "invalid_push_tokens", type_="primary")
    # One mark per token again: the earliest.
    op.execute(
        """
        DELETE FROM invalid_push_tokens AS later USING invalid_push_tokens AS earlier
        WHERE later.token = earlier.token AND (later.invalidated_at, later.tenant_id::text)
              > (earlier.invalidated_at, earlier.tenant_id::text)
        """
    )
    op.drop_column("invalid_push_tokens", "tenant_id")
    op.create_primary_key("invalid_push_tokens_pkey", "invalid_push_tokens", ["token"])
    op.drop_index("ix_notifications_tenant_finished_updated", table_name="notifications")
    op.drop_index("ix_notifications_queued_updated", table_name="notifications")
    op.drop_column("tenants", "sends_per_minute")
