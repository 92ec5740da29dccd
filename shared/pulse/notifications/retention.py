"""Retention: finished notifications (with their attempts), finished fan-outs and expired idempotency
records go away."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, tuple_
from sqlalchemy.orm import Session

from pulse.db.models import Fanout, IdempotencyRecord, Notification
from pulse.vocabulary import TERMINAL_STATUSES


def delete_expired(session: Session, *, keep_for: timedelta, batch_size: int) -> int:
    """One bounded batch of each; returns how many notifications were deleted. Attempts and outbox
    rows go with their notification (ON DELETE CASCADE)."""
    now = datetime.now(UTC)
    old = (
        select(Notification.id)
        .where(Notification.status.in_(TERMINAL_STATUSES), Notification.updated_at < now - keep_for)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    )
    deleted = session.execute(
        delete(Notification).where(Notification.id.in_(old.scalar_subquery())).returning(Notification.id)
    ).all()
    # A fan-out's notifications keep its id until then (ON DELETE SET NULL); a running one stays.
    old_fanouts = (
        select(Fanout.id)
        .where(Fanout.finished_at < now - keep_for)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    )
    session.execute(delete(Fanout).where(Fanout.id.in_(old_fanouts.scalar_subquery())))
    expired_keys = (
        select(IdempotencyRecord.tenant_id, IdempotencyRecord.key)
        .where(IdempotencyRecord.expires_at < now)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    )
    session.execute(
        delete(IdempotencyRecord).where(
            tuple_(IdempotencyRecord.tenant_id, IdempotencyRecord.key).in_(expired_keys)
        )
    )
    return len(deleted)
