"""Keeping pulse.<channel>.dead in step with PostgreSQL, in a private database and vhost (no scheduler
of the `stack` reconciles them behind the test's back)."""

import json
import uuid
from collections import Counter
from collections.abc import Collection, Iterator
from datetime import UTC, datetime, timedelta

import amqp
import pytest
from kombu import Connection
from sqlalchemy import delete, update
from sqlalchemy.orm import Session, sessionmaker

from devtools.stack import Infrastructure
from pulse.db import transaction
from pulse.db.models import Notification, OutboxMessage, Tenant
from pulse.dead_letters.queue import dead_letter_depth, prune_dead_letters, reconcile_dead_letter_queues
from pulse.dead_letters.service import ReplaySelection, replay
from pulse.messaging.publisher import ConfirmedPublisher, TaskMessage
from pulse.messaging.topology import DEAD_LETTER_EXCHANGE
from pulse.notifications.schemas import NotificationRequest
from pulse.notifications.service import accept_notification
from pulse.tenants.service import create_tenant
from pulse.vocabulary import Channel
from tests.conftest import wait_until

WORK_QUEUE = "pulse.email.normal"
DEAD_QUEUE = "pulse.email.dead"
FOREIGN = b"not json"


@pytest.fixture
def connection(private: Infrastructure, factory: sessionmaker[Session]) -> Iterator[Connection]:
    """A broker connection to empty queues and an empty database."""
    with Connection(private.broker_url) as connection:
        channel = connection.channel()
        for queue in (WORK_QUEUE, DEAD_QUEUE):
            # Until a purge finds nothing: a previous test's peek may still be returning messages.
            wait_until(lambda queue=queue: channel.queue_purge(queue) == 0, timeout=10)
        channel.close()
        with transaction(factory) as session:
            session.execute(delete(Tenant))  # Cascades to notifications and outbox.
        yield connection


def _settled(connection: Connection, depth: int) -> None:
    """Wait until the queue holds `depth` messages. Messages held unacknowledged by a closed channel
    (a peek, a prune) return to the queue a moment after the close, not at once."""
    wait_until(
        lambda: dead_letter_depth(connection, Channel.EMAIL) == depth,
        timeout=10,
        what=f"{depth} messages in {DEAD_QUEUE}",
    )


def _dead_letter(publisher: ConfirmedPublisher, connection: Connection, *ids: uuid.UUID, depth: int) -> None:
    """What a worker does to a failed notification: its message is rejected without requeue, and
    RabbitMQ moves it through pulse.dlx into the channel's dead-letter queue (which then holds
    `depth` messages)."""
    for notification_id in ids:
        publisher.publish([TaskMessage(notification_id, "email.normal")])
    channel = connection.channel()
    try:
        for _ in ids:
            message = wait_until(lambda: channel.basic_get(WORK_QUEUE, no_ack=False), timeout=10)
            channel.basic_reject(message.delivery_tag, requeue=False)
    finally:
        channel.close()
    _settled(connection, depth)


def _dead_letter_foreign(connection: Connection, *, depth: int) -> None:
    """Something that is not a Pulse task ends up in the queue too."""
    channel = connection.channel()
    try:
        channel.basic_publish(
            amqp.Message(FOREIGN), exchange=DEAD_LETTER_EXCHANGE.name, routing_key="email.normal"
        )
    finally:
        channel.close()
    _settled(connection, depth)


def _contents(connection: Connection, *, depth: int) -> list[str | bytes]:
    """The notification ids (or raw bodies, for foreign messages) in the dead-letter queue, once it
    holds `depth` messages; peeked at and left in place."""
    _settled(connection, depth)
    contents: list[str | bytes] = []
    channel = connection.channel()
    try:
        while (message := channel.basic_get(DEAD_QUEUE, no_ack=False)) is not None:
            try:
                contents.append(json.loads(message.body)[0][0])
            except ValueError:
                contents.append(message.body)
    finally:
        channel.close()
    return contents


def _failed_notifications(factory: sessionmaker[Session], count: int) -> list[uuid.UUID]:
    request = NotificationRequest.model_validate(
        {"channel": "email", "recipient": "ada@example.com", "content": {"subject": "s", "body": "b"}}
    )
    with transaction(factory) as session:
        tenant = create_tenant(session, name=f"dlq-{uuid.uuid4().hex[:8]}")
        ids = [
            accept_notification(session, tenant_id=tenant.id, request=request).notification.id
            for _ in range(count)
        ]
        session.execute(delete(OutboxMessage).where(OutboxMessage.notification_id.in_(ids)))
        session.execute(
            update(Notification)
            .where(Notification.id.in_(ids))
            .values(
                status="failed", failed_at=datetime.now(UTC), attempt_count=1, last_error="550 no such user"
            )
        )
    return ids


def _set_status(factory: sessionmaker[Session], notification_id: uuid.UUID, status: str) -> None:
    with transaction(factory) as session:
        session.execute(
            update(Notification)
            .where(Notification.id == notification_id)
            .values(status=status, failed_at=None if status != "failed" else datetime.now(UTC))
        )


def test_a_prune_drops_copies_of_notifications_no_longer_failed_and_keeps_foreign_messages(
    publisher: ConfirmedPublisher, connection: Connection
) -> None:
    kept, replayed, deleted = (uuid.uuid4() for _ in range(3))
    _dead_letter(publisher, connection, kept, replayed, depth=2)
    _dead_letter_foreign(connection, depth=3)
    _dead_letter(publisher, connection, deleted, depth=4)
    asked: list[set[uuid.UUID]] = []

    def still_failed(ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
        asked.append(set(ids))
        return {kept}

    assert prune_dead_letters(connection, Channel.EMAIL, still_failed) == 2

    assert asked == [{kept, replayed, deleted}]  # One question, Pulse messages only.
    assert Counter(_contents(connection, depth=2)) == Counter([str(kept), FOREIGN])


def test_a_prune_keeps_one_copy_per_failed_notification(
    publisher: ConfirmedPublisher, connection: Connection
) -> None:
    failed, other = uuid.uuid4(), uuid.uuid4()
    _dead_letter(publisher, connection, failed, other, failed, depth=3)
    _dead_letter_foreign(connection, depth=4)
    _dead_letter(publisher, connection, failed, depth=5)

    assert prune_dead_letters(connection, Channel.EMAIL, lambda ids: {failed, other}) == 2

    assert Counter(_contents(connection, depth=3)) == Counter([str(failed), str(other), FOREIGN])
    # A second pass has nothing left to drop.
    _settled(connection, 3)
    assert prune_dead_letters(connection, Channel.EMAIL, lambda ids: {failed, other}) == 0
    _settled(connection, 3)


def test_a_prune_of_an_empty_queue_asks_nothing_and_drops_nothing(connection: Connection) -> None:
    def still_failed(ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
        assert not ids
        return set()

    assert prune_dead_letters(connection, Channel.EMAIL, still_failed) == 0


# For the tests of the depth rule: a window in which no replay can have happened.
NO_REPLAYS = datetime.now(UTC) + timedelta(days=1)


def test_reconciliation_prunes_after_a_replay_even_when_the_queue_is_not_deeper_than_the_failures(
    publisher: ConfirmedPublisher, connection: Connection, factory: sessionmaker[Session]
) -> None:
    """One failed notification lost its broker copy; another was replayed. Counting alone would
    balance out (2 messages, 2 failed); the replay is what tells the reconciliation to look."""
    copyless, kept, replayed = _failed_notifications(factory, 3)
    _dead_letter(publisher, connection, kept, replayed, depth=2)
    before_replay = datetime.now(UTC)
    with transaction(factory) as session:
        replay(session, ReplaySelection(notification_id=replayed))

    with transaction(factory) as session:
        assert reconcile_dead_letter_queues(session, connection, replayed_since=NO_REPLAYS) == 0
    with transaction(factory) as session:
        assert reconcile_dead_letter_queues(session, connection, replayed_since=before_replay) == 1
    assert _contents(connection, depth=1) == [str(kept)]
    with factory() as session:
        assert session.get_one(Notification, copyless).status == "failed"


def test_reconciliation_leaves_queues_holding_no_more_messages_than_failed_notifications(
    publisher: ConfirmedPublisher, connection: Connection, factory: sessionmaker[Session]
) -> None:
    first, second = _failed_notifications(factory, 2)
    _dead_letter(publisher, connection, first, second, depth=2)

    with transaction(factory) as session:
        assert reconcile_dead_letter_queues(session, connection, replayed_since=NO_REPLAYS) == 0
    assert Counter(_contents(connection, depth=2)) == Counter([str(first), str(second)])


def test_reconciliation_prunes_a_queue_holding_more_messages_than_failed_notifications(
    publisher: ConfirmedPublisher, connection: Connection, factory: sessionmaker[Session]
) -> None:
    failed, replayed, also_failed = _failed_notifications(factory, 3)
    _dead_letter(publisher, connection, failed, replayed, also_failed, depth=3)
    _set_status(factory, replayed, "queued")  # A replay: 3 messages for 2 failed notifications.

    with transaction(factory) as session:
        assert reconcile_dead_letter_queues(session, connection, replayed_since=NO_REPLAYS) == 1
    assert Counter(_contents(connection, depth=2)) == Counter([str(failed), str(also_failed)])

    # Replayed and failed again: a second copy of the same notification.
    _set_status(factory, replayed, "failed")
    _settled(connection, 2)
    _dead_letter(publisher, connection, replayed, depth=3)
    _dead_letter(publisher, connection, failed, depth=4)  # A duplicate: 4 messages, 3 failed notifications.
    with transaction(factory) as session:
        assert reconcile_dead_letter_queues(session, connection, replayed_since=NO_REPLAYS) == 1
    assert Counter(_contents(connection, depth=3)) == Counter([str(failed), str(replayed), str(also_failed)])


def test_reconciliation_counts_failed_notifications_per_channel(
    publisher: ConfirmedPublisher, connection: Connection, factory: sessionmaker[Session]
) -> None:
    """Failed SMS notifications do not excuse stale messages in the email queue."""
    email, stale = _failed_notifications(factory, 2)
    sms = _failed_notifications(factory, 2)
    with transaction(factory) as session:
        session.execute(update(Notification).where(Notification.id.in_(sms)).values(channel="sms"))
    _dead_letter(publisher, connection, email, stale, depth=2)
    _set_status(factory, stale, "delivered")

    with transaction(factory) as session:
        assert reconcile_dead_letter_queues(session, connection, replayed_since=NO_REPLAYS) == 1
    assert _contents(connection, depth=1) == [str(email)]
