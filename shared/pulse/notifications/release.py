"""Releasing scheduled notifications when they fall due (send_at reached, quiet hours over)."""

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from pulse.db.models import Notification
from pulse.notifications.send_time import DIGEST
from pulse.observability import metrics
from pulse.outbox.service import owe_publish_for_batch
from pulse.vocabulary import Status


def release_due_notifications(session: Session, *, batch_size: int) -> int:
    """Move due `scheduled` notifications to `queued` and owe their publish (the outbox sweep sends it).
    Several schedulers may run: none is released twice (see owe_publish_for_batch)."""
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
    )
    released = owe_publish_for_batch(session, due, status=Status.QUEUED, updated_at=now)
    metrics.SCHEDULED_RELEASED.inc(released)
    return released
