"""realtime connections: the WebSocket connections each realtime process holds (the per-user limit
across processes, presence), and each user's last-seen time once they have none

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows come and go with every connect and disconnect and are refreshed every few seconds: nothing
    # in them outlives a restart of the processes that hold the connections, so no WAL for them.
    op.create_table(
        "realtime_connections",
        sa.Column("id", sa.UUID(), primary_key=True),
        sa.Column("tenant_id", sa.UUID(), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("process_id", sa.String(200), nullable=False),
        sa.Column("connected_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        prefixes=["UNLOGGED"],
    )
    op.create_index("ix_realtime_connections_user", "realtime_connections", ["tenant_id", "user_id"])
    op.create_index("ix_realtime_connections_last_seen_at", "realtime_connections", ["last_seen_at"])
    op.create_table(
        "realtime_last_seen",
        sa.Column("tenant_id", sa.UUID(), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("realtime_last_seen")
    op.drop_table("realtime_connections")
