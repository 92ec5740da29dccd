"""Retention deletes what is old and finished, and nothing else (private database)."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from pulse.db import transaction
from pulse.db.models import DeliveryAttempt, Fanout, IdempotencyRecord, Notification
from pulse.notifications.retention import delete_expired
from pulse.notifications.schemas import NotificationRequest
from pulse.notifications.service import accept_notification
from pulse.tenants.service import create_tenant
from pulse.topics.service import start_fanout, subscribe

REQUEST = NotificationRequest.model_validate(
    {"channel": "email", "recipient": "ada@example.com", "content": {"subject": "s", "body": "b"}}
)


def test_finished_notifications_older_than_the_retention_go_with_their_attempts(
    factory: sessionmaker[Session],
) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=40)
    with transaction(factory) as session:
        tenant = create_tenant(session, name="retention")
        ids = {
            label: accept_notification(
                session,
                tenant_id=tenant.id,
                request=REQUEST,
                idempotency_key=label,
                publish_grace=timedelta(hours=1),
            ).notification.id
            for label in ("old delivered", "old failed", "old but retrying", "recent delivered")
        }
        for label, status in [
            ("old delivered", "delivered"),
            ("old failed", "failed"),
            ("old but retrying", "retrying"),
            ("recent delivered", "delivered"),
        ]:
            updated_at = datetime.now(UTC) if label.startswith("recent") else long_ago
            session.execute(
                update(Notification)
                .where(Notification.id == ids[label])
                .values(status=status, updated_at=updated_at)
            )
        session.add(
            DeliveryAttempt(
                notification_id=ids["old delivered"],
                number=1,
                started_at=long_ago,
                finished_at=long_ago,
                provider="smtp",
                outcome="delivered",
            )
        )
        # An expired idempotency record goes even though its notification stays.
        session.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.key == "recent delivered")
            .values(expires_at=long_ago)
        )

    with transaction(factory) as session:
        assert delete_expired(session, keep_for=timedelta(days=30), batch_size=100) == 2

    with factory() as session:
        left = set(session.scalars(select(Notification.id).where(Notification.tenant_id == tenant.id)))
        attempts = session.scalar(select(func.count()).select_from(DeliveryAttempt))
        keys = set(
            session.scalars(select(IdempotencyRecord.key).where(IdempotencyRecord.tenant_id == tenant.id))
        )
    assert left == {ids["old but retrying"], ids["recent delivered"]}
    assert attempts == 0
    assert keys == {"old but retrying"}


def test_finished_fanouts_older_than_the_retention_go_and_running_ones_stay(
    factory: sessionmaker[Session],
) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=40)
    topic_send = NotificationRequest.model_validate(
        {"channel": "inapp", "topic": "news", "content": {"body": "b"}}
    )
    with transaction(factory) as session:
        tenant = create_tenant(session, name="fanout-retention")
        subscribe(session, tenant_id=tenant.id, topic="news", user_ids=["u-1"])
        ids = {
            label: start_fanout(session, tenant_id=tenant.id, request=topic_send).id
            for label in ("old done", "old cancelled", "old but running", "recent done")
        }
        for label, status in [
            ("old done", "done"),
            ("old cancelled", "cancelled"),
            ("old but running", "running"),
            ("recent done", "done"),
        ]:
            finished_at = None if status == "running" else long_ago
            if label.startswith("recent"):
                finished_at = datetime.now(UTC)
            session.execute(
                update(Fanout)
                .where(Fanout.id == ids[label])
                .values(status=status, created_at=long_ago, updated_at=long_ago, finished_at=finished_at)
            )

    with transaction(factory) as session:
        delete_expired(session, keep_for=timedelta(days=30), batch_size=100)

    with factory() as session:
        left = set(session.scalars(select(Fanout.id).where(Fanout.tenant_id == tenant.id)))
    assert left == {ids["old but running"], ids["recent done"]}
