"""fan-outs: subscribers split into parts (user id ranges) that runners create side by side

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_PROGRESS = ("created", "skipped", "skipped_reasons", "last_user_id", "resume_at")


def upgrade() -> None:
    op.create_table(
        "fanout_parts",
        sa.Column("fanout_id", sa.UUID(), sa.ForeignKey("fanouts.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("part", sa.Integer(), primary_key=True),
        sa.Column("first_user_id", sa.String(255), nullable=True),
        sa.Column("end_user_id", sa.String(255), nullable=True),
        sa.Column("last_user_id", sa.String(255), nullable=True),
        sa.Column("done", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("created", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("skipped", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("skipped_reasons", JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("resume_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_index(
        "ix_fanout_parts_waiting", "fanout_parts", ["resume_at"], postgresql_where=sa.text("NOT done")
    )
    # Each existing fan-out becomes one part covering every user id, with its progress.
    op.execute(
        """
        INSERT INTO fanout_parts (fanout_id, part, last_user_id, done, created, skipped, skipped_reasons,
                                  resume_at, updated_at)
        SELECT id, 0, last_user_id, status <> 'running', created, skipped, skipped_reasons, resume_at,
               updated_at
        FROM fanouts
        """
    )
    op.drop_index("ix_fanouts_running", table_name="fanouts")
    for column in _PROGRESS:
        op.drop_column("fanouts", column)
    op.create_index(
        "ix_fanouts_running", "fanouts", ["created_at"], postgresql_where=sa.text("status = 'running'")
    )


def downgrade() -> None:
    op.drop_index("ix_fanouts_running", table_name="fanouts")
    op.add_column("fanouts", sa.Column("created", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.add_column("fanouts", sa.Column("skipped", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.add_column(
        "fanouts",
        sa.Column("skipped_reasons", JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
    )
    op.add_column("fanouts", sa.Column("last_user_id", sa.String(255), nullable=True))
    op.add_column(
        "fanouts",
        sa.Column("resume_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    # One range of progress per fan-out: a running fan-out of several parts cannot be resumed as one
    # (a later part's subscribers would be created twice), so it is cancelled; counts are summed.
    op.execute(
        """
        UPDATE fanouts SET
            created = summed.created,
            skipped = summed.skipped,
            skipped_reasons = summed.skipped_reasons,
            last_user_id = summed.last_user_id,
            resume_at = summed.resume_at,
            status = CASE WHEN fanouts.status = 'running' AND summed.parts > 1 THEN 'cancelled'
                          ELSE fanouts.status END,
            finished_at = CASE WHEN fanouts.status = 'running' AND summed.parts > 1 THEN now()
                               ELSE fanouts.finished_at END
        FROM (
            SELECT fanout_id, count(*) AS parts, sum(created) AS created, sum(skipped) AS skipped,
                   (SELECT coalesce(jsonb_object_agg(reason, total), '{}'::jsonb) FROM (
                        SELECT reason, sum(count::int) AS total
                        FROM fanout_parts AS inner_part, jsonb_each_text(inner_part.skipped_reasons)
                             AS reasons (reason, count)
                        WHERE inner_part.fanout_id = part.fanout_id GROUP BY reason) AS by_reason
                   ) AS skipped_reasons,
                   max(last_user_id) AS last_user_id, max(resume_at) AS resume_at
            FROM fanout_parts AS part GROUP BY fanout_id
        ) AS summed
        WHERE summed.fanout_id = fanouts.id
        """
    )
    op.create_index(
        "ix_fanouts_running", "fanouts", ["resume_at"], postgresql_where=sa.text("status = 'running'")
    )
    op.drop_table("fanout_parts")
