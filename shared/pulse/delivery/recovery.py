"""The scheduler's safety nets: whatever a crash interrupted is found in PostgreSQL and sent again.

- A worker killed mid-send (or hung) leaves a `sending` row whose claim expires: the lost attempt is
  recorded as failed and counts against the attempt budget like any other failure. While budget is
  left the notification is re-queued; once it is spent (a message that crashes or hangs every worker
  that takes it) it is `failed` and goes to its channel's dead-letter queue.
- A retry whose delayed message never came (the worker died between recording `retrying` and
  publishing the retry, or the message was lost) is published again once it is well overdue.
- A notification `queued` for long with no publish owed (its message was unroutable, or lost after
  RabbitMQ confirmed it) is published again.

All re-publish through the outbox; the worker's claim makes any extra copy harmless.
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Row, exists, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from pulse.callbacks.service import StatusChange, owe_status_callback
from pulse.db.models import DeliveryAttempt, Notification, OutboxMessage
from pulse.dead_letters.queue import dead_letter
from pulse.delivery.retry import RetrySettings
from pulse.delivery.service import Outcome
from pulse.messaging.publisher import ConfirmedPublisher
from pulse.observability import metrics
from pulse.outbox.service import owe_publish, owe_publish_for_batch
from pulse.vocabulary import Channel, Priority, Status

LOST_ATTEMPT_ERROR = "the worker stopped before finishing this attempt (claim expired)"
WORKER_LOST_REASON = "worker_lost"


def recover_expired_claims(
    session: Session, publisher: ConfirmedPublisher, *, retries: RetrySettings, batch_size: int
) -> int:
    """Record the lost attempt of every expired claim; re-queue the notifications with attempts left
    and fail the others (publishing them to the dead-letter queue before the caller commits: should
    the commit fail, the reconciliation drops the extra copy). Returns how many were recovered."""
    now = datetime.now(UTC)
    expired = session.execute(
        select(
            Notification.id,
            Notification.tenant_id,
            Notification.channel,
            Notification.priority,
            Notification.recipient,
            Notification.user_id,
            Notification.meta,
            Notification.callback_url,
            Notification.attempt_count,
            Notification.attempts_before_replay,
        )
        .where(Notification.status == Status.SENDING, Notification.claimed_until < now)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    ).all()
    if not expired:
        return 0
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
    spent = [row for row in expired if _budget_spent(row, retries)]
    again = [row for row in expired if not _budget_spent(row, retries)]
    if again:
        session.execute(
            update(Notification)
            .where(Notification.id.in_([row.id for row in again]))
            .values(status=Status.QUEUED, claimed_until=None, updated_at=now)
        )
        owe_publish(session, again)
        metrics.CLAIMS_RECOVERED.inc(len(again))
    if spent:
        _fail(session, publisher, spent, now=now)
    return len(expired)


def _budget_spent(row: Row[Any], retries: RetrySettings) -> bool:
    # The claim counted the lost attempt; a replay's fresh budget starts after attempts_before_replay.
    attempts_used = row.attempt_count - row.attempts_before_replay
    return bool(attempts_used >= retries.plan_for(Priority(row.priority)).attempts)


def _fail(
    session: Session, publisher: ConfirmedPublisher, rows: Sequence[Row[Any]], *, now: datetime
) -> None:
    """Fail notifications whose last attempt was lost too, owing their status callbacks, and put
    them in the dead-letter queue (no worker holds their message any more to reject it there)."""
    lost = dict(
        session.execute(
            select(DeliveryAttempt.notification_id, func.count())
            .join(Notification, Notification.id == DeliveryAttempt.notification_id)
            .where(
                DeliveryAttempt.notification_id.in_([row.id for row in rows]),
                DeliveryAttempt.error == LOST_ATTEMPT_ERROR,
                DeliveryAttempt.number > Notification.attempts_before_replay,
            )
            .group_by(DeliveryAttempt.notification_id)
        ).all()
    )
    errors = {
        row.id: f"worker lost {lost[row.id]} time{'s' if lost[row.id] > 1 else ''} (its claim expired "
        f"before the attempt finished); attempt budget spent after "
        f"{row.attempt_count - row.attempts_before_replay} attempts"
        for row in rows
    }
    session.execute(
        update(Notification),
        [
            {
                "id": row.id,
                "status": Status.FAILED,
                "claimed_until": None,
                "failed_at": now,
                "updated_at": now,
                "last_error": errors[row.id],
            }
            for row in rows
        ],
    )
    for row in rows:
        metrics.NOTIFICATIONS_FAILED.labels(row.channel, WORKER_LOST_REASON).inc()
        if row.callback_url is not None:
            owe_status_callback(
                session,
                callback_url=row.callback_url,
                change=StatusChange(
                    notification_id=row.id,
                    tenant_id=row.tenant_id,
                    channel=Channel(row.channel),
                    priority=Priority(row.priority),
                    recipient=row.recipient,
                    user_id=row.user_id,
                    status=Status.FAILED,
                    changed_at=now,
                    attempt_count=row.attempt_count,
                    delivered_at=None,
                    failed_at=now,
                    last_error=errors[row.id],
                    metadata=row.meta,
                ),
            )
    dead_letter(publisher, rows)


def recover_overdue_retries(session: Session, *, overdue_after: timedelta, batch_size: int) -> int:
    now = datetime.now(UTC)
    overdue = (
        select(Notification.id)
        .where(Notification.status == Status.RETRYING, Notification.next_attempt_at < now - overdue_after)
        .limit(batch_size)
    )
    # Due now: not picked again before another `overdue_after` has passed.
    recovered = owe_publish_for_batch(session, overdue, next_attempt_at=now)
    metrics.RETRIES_RECOVERED.inc(recovered)
    return recovered


def requeue_stuck_queued(session: Session, *, older_than: timedelta, batch_size: int) -> int:
    """Publish again `queued` notifications untouched for `older_than` whose publish is not owed any
    more. One may merely wait behind a long backlog: the extra copy costs a skipped message, and the
    row is not picked again before another `older_than`."""
    now = datetime.now(UTC)
    stuck = (
        select(Notification.id)
        .where(
            Notification.status == Status.QUEUED,
            Notification.updated_at < now - older_than,
            ~exists().where(OutboxMessage.notification_id == Notification.id),
        )
        .order_by(Notification.updated_at)
        .limit(batch_size)
    )
    requeued = owe_publish_for_batch(session, stuck, updated_at=now)
    metrics.QUEUED_REQUEUED.inc(requeued)
    return requeued
