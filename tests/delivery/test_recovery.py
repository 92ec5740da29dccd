"""The scheduler's recovery of retries whose delayed message never came, in a private database
(no scheduler or worker of the `stack` touches it)."""

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from pulse.db import transaction
from pulse.db.models import Notification, OutboxMessage
from pulse.delivery.recovery import recover_overdue_retries
from pulse.notifications.schemas import NotificationRequest
from pulse.notifications.service import accept_notification
from pulse.tenants.service import create_tenant

OVERDUE_AFTER = timedelta(seconds=30)


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
