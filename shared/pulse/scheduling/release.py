"""Releasing scheduled notifications when they fall due (send_at reached, quiet hours over)."""

from datetime import UTC, datetime

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from pulse.db.models import Notification, OutboxMessage
from pulse.messaging.topology import routing_key
from pulse.observability import metrics
from pulse.vocabulary import Channel, Priority, Status


def release_due_notifications(session: Session, *, batch_size: int) -> int:
    """Move due `scheduled` notifications to `queued` and owe their publish (the outbox sweep sends it).
    Several schedulers may run: each locks its batch with SKIP LOCKED, so none is released twice."""
    now = datetime.now(UTC)
    due = (
        select(Notification.id)
        .where(Notification.status == Status.SCHEDULED, Notification.scheduled_for <= now)
        .order_by(Notification.scheduled_for)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    )
    released = session.execute(
        update(Notification)
        .where(Notification.id.in_(due.scalar_subquery()))
        .values(status=Status.QUEUED, updated_at=now)
        .returning(Notification.id, Notification.channel, Notification.priority)
    ).all()
    if released:
        session.execute(
            insert(OutboxMessage),
            [
                {
                    "notification_id": row.id,
                    "routing_key": routing_key(Channel(row.channel), Priority(row.priority)),
                }
                for row in released
            ],
        )
        metrics.SCHEDULED_RELEASED.inc(len(released))
    return len(released)
