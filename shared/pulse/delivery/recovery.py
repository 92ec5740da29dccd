"""The scheduler's safety nets: whatever a crash interrupted is found in PostgreSQL and sent again.

- A worker killed mid-send leaves a `sending` row whose claim expires: it is re-queued, and the lost
  attempt recorded as failed.
- A retry whose delayed message never came (the worker died between recording `retrying` and
  publishing the retry, or the message was lost) is published again once it is well overdue.

Both re-publish through the outbox; the worker's claim makes any extra copy harmless.
"""

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from pulse.db.models import DeliveryAttempt, Notification
from pulse.delivery.service import Outcome
from pulse.observability import metrics
from pulse.outbox.service import owe_publish
from pulse.vocabulary import Status

LOST_ATTEMPT_ERROR = "the worker stopped before finishing this attempt (claim expired)"


def recover_expired_claims(session: Session, *, batch_size: int) -> int:
    now = datetime.now(UTC)
    expired = session.execute(
        select(Notification.id, Notification.channel, Notification.priority, Notification.attempt_count)
        .where(Notification.status == Status.SENDING, Notification.claimed_until < now)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    ).all()
    if not expired:
        return 0
    session.execute(
        update(Notification)
        .where(Notification.id.in_([row.id for row in expired]))
        .values(status=Status.QUEUED, claimed_until=None, updated_at=now)
    )
    session.execute(
        pg_insert(DeliveryAttempt).on_conflict_do_nothing(),
        [
            {
                "notification_id": row.id,
                "number": row.attempt_count,
                "started_at": now,
                "finished_at": now,
                "provider": "unknown",
                "outcome": Outcome.FAILED,
                "error": LOST_ATTEMPT_ERROR,
            }
            for row in expired
        ],
    )
    owe_publish(session, expired)
    metrics.CLAIMS_RECOVERED.inc(len(expired))
    return len(expired)


def recover_overdue_retries(session: Session, *, overdue_after: timedelta, batch_size: int) -> int:
    now = datetime.now(UTC)
    overdue = session.execute(
        select(Notification.id, Notification.channel, Notification.priority)
        .where(Notification.status == Status.RETRYING, Notification.next_attempt_at < now - overdue_after)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    ).all()
    if not overdue:
        return 0
    # Due now: not picked again before another `overdue_after` has passed.
    session.execute(
        update(Notification)
        .where(Notification.id.in_([row.id for row in overdue]))
        .values(next_attempt_at=now)
    )
    owe_publish(session, overdue)
    metrics.RETRIES_RECOVERED.inc(len(overdue))
    return len(overdue)
