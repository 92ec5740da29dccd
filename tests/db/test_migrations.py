"""Migrations that move data, run down and up again on a private database."""

import uuid

from alembic import command
from sqlalchemy import create_engine, text

from devtools.stack import Infrastructure
from pulse.db.migrate import alembic_config


def test_invalid_push_tokens_become_the_marks_of_the_tenants_whose_sends_failed(
    private: Infrastructure,
) -> None:
    config = alembic_config(private.database_url)
    command.downgrade(config, "0008")
    a, b = uuid.uuid4(), uuid.uuid4()
    engine = create_engine(private.database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text("INSERT INTO tenants (id, name) VALUES (:a, 'a'), (:b, 'b')"), {"a": a, "b": b}
            )
            for tenant, token, status in (
                (a, "dead", "failed"),
                (b, "dead", "delivered"),
                (a, "maybe", "failed"),
            ):
                connection.execute(
                    text(
                        "INSERT INTO notifications (id, tenant_id, channel, priority, recipient, status,"
                        " content) VALUES (:id, :tenant, 'push', 'normal', :token, :status, '{}')"
                    ),
                    {"id": uuid.uuid4(), "tenant": tenant, "token": token, "status": status},
                )
            connection.execute(
                text(
                    "INSERT INTO invalid_push_tokens (token, reason) VALUES "
                    "('dead', 'UNREGISTERED'), ('maybe', 'INVALID_ARGUMENT'), ('orphan', 'UNREGISTERED')"
                )
            )

        command.upgrade(config, "head")
        with engine.connect() as connection:
            marks = connection.execute(text("SELECT tenant_id, token, reason FROM invalid_push_tokens")).all()
        # Only the tenant whose send FCM refused keeps the mark; an INVALID_ARGUMENT may have been
        # about the message, and a mark without a failed send belongs to nobody.
        assert [tuple(mark) for mark in marks] == [(a, "dead", "UNREGISTERED")]

        command.downgrade(config, "0008")
        with engine.connect() as connection:
            assert connection.execute(text("SELECT token FROM invalid_push_tokens")).scalars().all() == [
                "dead"
            ]
        command.upgrade(config, "head")
    finally:
        engine.dispose()


def test_a_fanout_under_way_becomes_one_part_with_its_progress_and_back(private: Infrastructure) -> None:
    config = alembic_config(private.database_url)
    command.downgrade(config, "0017")
    tenant, running, done = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    engine = create_engine(private.database_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO tenants (id, name) VALUES (:t, 'fanouts')"), {"t": tenant})
            connection.execute(
                text(
                    "INSERT INTO fanouts (id, tenant_id, topic, notification, status, recipients, created,"
                    " skipped, skipped_reasons, last_user_id) VALUES"
                    " (:running, :t, 'news', '{}', 'running', 10, 4, 1, '{\"opted_out\": 1}', 'u-4'),"
                    " (:done, :t, 'news', '{}', 'done', 3, 3, 0, '{}', 'u-2')"
                ),
                {"t": tenant, "running": running, "done": done},
            )

        command.upgrade(config, "head")
        with engine.connect() as connection:
            parts = connection.execute(
                text(
                    "SELECT fanout_id, part, first_user_id, end_user_id, last_user_id, done, created,"
                    " skipped, skipped_reasons FROM fanout_parts ORDER BY created DESC"
                )
            ).all()
        assert [tuple(part) for part in parts] == [
            (running, 0, None, None, "u-4", False, 4, 1, {"opted_out": 1}),
            (done, 0, None, None, "u-2", True, 3, 0, {}),
        ]

        command.downgrade(config, "0017")
        with engine.connect() as connection:
            fanouts = connection.execute(
                text(
                    "SELECT id, status, created, skipped, skipped_reasons, last_user_id FROM fanouts"
                    " ORDER BY created DESC"
                )
            ).all()
        assert [tuple(fanout) for fanout in fanouts] == [
            (running, "running", 4, 1, {"opted_out": 1}, "u-4"),
            (done, "done", 3, 0, {}, "u-2"),
        ]
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM tenants WHERE id = :t"), {"t": tenant})
        command.upgrade(config, "head")
    finally:
        engine.dispose()
