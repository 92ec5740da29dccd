"""Releasing scheduled notifications when they fall due (send_at reached, quiet hours over)."""

from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from pulse.db.models import Notification
from pulse.notifications.send_time import DIGEST
from pulse.observability import metrics
from pulse.outbox.service import owe_publish
from pulse.vocabulary import Status


def release_due_notifications(session: Session, *, batch_size: int) -> int:
    """Move due `scheduled` notifications to `queued` and owe their publish (the outbox sweep sends it).
    Several schedulers may run: each locks its batch with SKIP LOCKED, so none is released twice."""
    now = datetime.now(UTC)
    due = (
        select(Notification.id)
        .where(
            Notification.status == Status.SCHEDULED,
            Notification.scheduled_for <= now,
            Notification.deferred_reason.is_distinct_from(DIGEST),
        )
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
    owe_publish(session, released)
    if released:
        metrics.SCHEDULED_RELEASED.inc(len(released))
    return len(released)
