"""The scheduler's recovery of retries whose delayed message never came and of claims whose worker
was lost, in a private database and vhost (no scheduler or worker of the `stack` touches them)."""

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from devtools.stack import Infrastructure
from pulse.db import transaction
from pulse.db.models import DeliveryAttempt, Notification, OutboxMessage
from pulse.dead_letters.service import ReplaySelection, list_dead_letters, replay
from pulse.delivery.recovery import recover_expired_claims, recover_overdue_retries, requeue_stuck_queued
from pulse.delivery.retry import RetrySettings
from pulse.delivery.service import claim_for_delivery
from pulse.messaging.publisher import ConfirmedPublisher
from pulse.notifications.schemas import NotificationRequest
from pulse.notifications.service import accept_notification
from pulse.tenants.service import create_tenant
from pulse.vocabulary import Channel
from tests.conftest import drain

DEAD_QUEUE = "pulse.email.dead"
OVERDUE_AFTER = timedelta(seconds=30)
LEASE = timedelta(seconds=60)


def _retrying(factory: sessionmaker[Session], *next_attempts: datetime) -> list[uuid.UUID]:
    """`retrying` notifications (one per next attempt time) whose first publish is long done."""
    request = NotificationRequest.model_validate(
        {
            "channel": "email",
            "recipient": "ada@example.com",
            "priority": "high",
            "content": {"subject": "s", "body": "b"},
        }
    )
    with transaction(factory) as session:
        tenant = create_tenant(session, name=f"recovery-{uuid.uuid4().hex[:8]}")
        ids = []
        for next_attempt_at in next_attempts:
            notification_id = accept_notification(
                session, tenant_id=tenant.id, request=request
            ).notification.id
            session.execute(delete(OutboxMessage).where(OutboxMessage.notification_id == notification_id))
            session.execute(
                update(Notification)
                .where(Notification.id == notification_id)
                .values(status="retrying", attempt_count=1, next_attempt_at=next_attempt_at, last_error="421")
            )
            ids.append(notification_id)
    return ids


def _recover(factory: sessionmaker[Session]) -> int:
    with transaction(factory) as session:
        return recover_overdue_retries(session, overdue_after=OVERDUE_AFTER, batch_size=100)


def _owed(factory: sessionmaker[Session], notification_id: uuid.UUID) -> list[OutboxMessage]:
    with factory() as session:
        return list(
            session.scalars(select(OutboxMessage).where(OutboxMessage.notification_id == notification_id))
        )


def _next_attempt_at(factory: sessionmaker[Session], notification_id: uuid.UUID) -> datetime | None:
    with factory() as session:
        return session.scalar(select(Notification.next_attempt_at).where(Notification.id == notification_id))


def test_an_overdue_retry_is_published_again_once_and_a_pending_one_is_left_alone(
    factory: sessionmaker[Session],
) -> None:
    now = datetime.now(UTC)
    overdue_since = now - OVERDUE_AFTER - timedelta(seconds=5)
    pending_at = now - OVERDUE_AFTER + timedelta(seconds=20)  # Late, but not yet overdue.
    overdue, pending = _retrying(factory, overdue_since, pending_at)

    before = datetime.now(UTC)
    assert _recover(factory) == 1
    after = datetime.now(UTC)

    [owed] = _owed(factory, overdue)
    assert owed.routing_key == "email.high"
    assert owed.available_at <= datetime.now(UTC)  # Due at once: the sweep publishes it.
    next_attempt_at = _next_attempt_at(factory, overdue)
    assert next_attempt_at is not None and before <= next_attempt_at <= after
    assert _owed(factory, pending) == []
    assert _next_attempt_at(factory, pending) == pending_at

    # Now due: not picked again before another OVERDUE_AFTER has passed.
    assert _recover(factory) == 0
    assert len(_owed(factory, overdue)) == 1
    with factory() as session:
        statuses = set(
            session.scalars(select(Notification.status).where(Notification.id.in_([overdue, pending])))
        )
    assert statuses == {"retrying"}


def test_only_retrying_notifications_are_recovered(factory: sessionmaker[Session]) -> None:
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    ids = _retrying(factory, long_ago, long_ago, long_ago)
    with transaction(factory) as session:
        for notification_id, status in zip(ids, ("queued", "failed", "delivered"), strict=True):
            session.execute(
                update(Notification).where(Notification.id == notification_id).values(status=status)
            )

    assert _recover(factory) == 0
    assert all(_owed(factory, notification_id) == [] for notification_id in ids)


# --- expired claims: a worker that crashed or hung -------------------------------------------------

THREE_ATTEMPTS = RetrySettings(high_attempts=3)


def _lose_the_worker(
    factory: sessionmaker[Session], notification_id: uuid.UUID, publisher: ConfirmedPublisher
) -> str:
    """A worker claims the notification and is never heard of again; the scheduler then finds the
    expired claim. Returns the notification's status afterwards."""
    with transaction(factory) as session:
        # A lease that has already run out: the worker is gone as soon as it claimed.
        claims = claim_for_delivery(
            session, notification_ids=[notification_id], lease=timedelta(seconds=-1), retries=THREE_ATTEMPTS
        )
        assert notification_id in claims
    with transaction(factory) as session:
        assert recover_expired_claims(session, publisher, retries=THREE_ATTEMPTS, batch_size=100) == 1
    with factory() as session:
        return session.get_one(Notification, notification_id).status


def test_a_notification_that_keeps_losing_its_worker_is_dead_lettered_once_its_budget_is_spent(
    factory: sessionmaker[Session], publisher: ConfirmedPublisher, private: Infrastructure
) -> None:
    [notification_id] = _retrying(factory, datetime.now(UTC))
    with transaction(factory) as session:  # A fresh notification, as accepted.
        session.execute(
            update(Notification)
            .where(Notification.id == notification_id)
            .values(status="queued", attempt_count=0, next_attempt_at=None, last_error=None)
        )
    drain(private.broker_url, DEAD_QUEUE)

    statuses = [_lose_the_worker(factory, notification_id, publisher) for _ in range(3)]

    assert statuses == ["queued", "queued", "failed"]
    with factory() as session:
        failed = session.get_one(Notification, notification_id)
        lost = session.scalars(
            select(DeliveryAttempt.outcome).where(DeliveryAttempt.notification_id == notification_id)
        ).all()
        owed = session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.notification_id == notification_id)
        )
    assert failed.attempt_count == 3 and lost == ["failed"] * 3
    assert failed.last_error is not None and "worker lost 3 times" in failed.last_error
    assert failed.failed_at is not None and failed.claimed_until is None
    assert owed == 2  # The two re-queues; nothing more once failed.
    # Where every failed notification is: in the dead-letter queue, and listed as a dead letter.
    assert drain(private.broker_url, DEAD_QUEUE) == [str(notification_id)]
    with factory() as session:
        assert notification_id in {
            row.id for row in list_dead_letters(session, tenant_id=None, channel=Channel.EMAIL, limit=100)
        }


def test_lost_attempts_count_against_the_budget_left_after_a_replay(
    factory: sessionmaker[Session], publisher: ConfirmedPublisher, private: Infrastructure
) -> None:
    """A replay grants a fresh budget: attempts lost before it do not count again."""
    [notification_id] = _retrying(factory, datetime.now(UTC))
    with transaction(factory) as session:
        session.execute(
            update(Notification)
            .where(Notification.id == notification_id)
            .values(status="failed", attempt_count=3, next_attempt_at=None, failed_at=datetime.now(UTC))
        )
        replay(session, ReplaySelection(notification_id=notification_id))

    statuses = [_lose_the_worker(factory, notification_id, publisher) for _ in range(3)]

    assert statuses == ["queued", "queued", "failed"]
    with factory() as session:
        assert "worker lost 3 times" in (session.get_one(Notification, notification_id).last_error or "")
    assert drain(private.broker_url, DEAD_QUEUE) == [str(notification_id)]


# --- queued notifications whose message never reached a queue ---------------------------------------

STUCK_AFTER = timedelta(minutes=5)


def test_a_queued_notification_without_a_message_is_published_again_once_and_others_are_left_alone(
    factory: sessionmaker[Session],
) -> None:
    """Unroutable, or lost after the broker confirmed it: nothing but PostgreSQL remembers it."""
    long_ago = datetime.now(UTC) - STUCK_AFTER - timedelta(minutes=1)
    stuck, owed, recent, sending = _retrying(factory, *[datetime.now(UTC)] * 4)
    with transaction(factory) as session:
        for notification_id, status, updated_at in (
            (stuck, "queued", long_ago),
            (owed, "queued", long_ago),  # Its publish is still owed: the outbox sweep's business.
            (recent, "queued", datetime.now(UTC)),
            (sending, "sending", long_ago),
        ):
            session.execute(
                update(Notification)
                .where(Notification.id == notification_id)
                .values(status=status, updated_at=updated_at, next_attempt_at=None)
            )
        session.add(OutboxMessage(notification_id=owed, routing_key="email.high"))

    assert _requeue_stuck(factory) == 1

    [republished] = _owed(factory, stuck)
    assert republished.routing_key == "email.high"
    assert [len(_owed(factory, other)) for other in (owed, recent, sending)] == [1, 0, 0]
    # Published again at most once per STUCK_AFTER.
    assert _requeue_stuck(factory) == 0


def _requeue_stuck(factory: sessionmaker[Session]) -> int:
    with transaction(factory) as session:
        return requeue_stuck_queued(session, older_than=STUCK_AFTER, batch_size=100)


def test_an_expired_claim_is_taken_over_by_a_worker_only_while_attempts_are_left(
    factory: sessionmaker[Session],
) -> None:
    retries = RetrySettings()  # high: 5 attempts
    spent, left = _retrying(factory, datetime.now(UTC), datetime.now(UTC))
    with transaction(factory) as session:
        for notification_id, attempts in ((spent, 5), (left, 4)):
            session.execute(
                update(Notification)
                .where(Notification.id == notification_id)
                .values(status="sending", attempt_count=attempts, claimed_until=datetime.now(UTC) - LEASE)
            )
        claims = claim_for_delivery(session, notification_ids=[spent, left], lease=LEASE, retries=retries)

    # The spent one stays for the scheduler, which records the lost attempt and dead-letters it.
    assert list(claims) == [left]
    assert claims[left].attempts_left == 0
