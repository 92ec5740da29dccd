"""Claiming a notification for delivery and recording the outcome of each attempt.

A claim is a lease: the row is `sending` until `claimed_until`. A second copy of the message (broker
redelivery, outbox re-publish) finds the row claimed or finished and does nothing, so a notification is
sent at most once per successful attempt. A worker killed mid-send leaves a lease that expires; the
scheduler then re-queues the row (see `recover_expired_claims`).
"""

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session, sessionmaker

from pulse.db import transaction
from pulse.db.models import DeliveryAttempt, Notification, OutboxMessage, delivery_attempts_table
from pulse.db.models import notifications_table as _notification
from pulse.errors import PermanentProviderError, ProviderError
from pulse.messaging.topology import routing_key
from pulse.observability import metrics
from pulse.vocabulary import Channel, Priority, Status

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    notification_id: uuid.UUID
    channel: Channel
    priority: Priority
    recipient: str
    content: dict[str, Any]
    attempt_number: int
    created_at: datetime


class Provider(Protocol):
    """Something that delivers a claimed notification, raising a ProviderError when it cannot."""

    name: str

    def send(self, claim: Claim) -> None: ...


class Outcome(StrEnum):
    DELIVERED = "delivered"
    FAILED = "failed"
    SKIPPED = "skipped"  # Already delivered, claimed by another worker, or not due yet.


@dataclass(frozen=True)
class DeliveryResult:
    outcome: Outcome
    error: str | None = None


# The two statements every delivery runs, built once: values arrive as bound parameters, so
# SQLAlchemy reuses one compiled form instead of building a cache key per call.
_CLAIM = (
    update(_notification)
    .where(
        _notification.c.id == bindparam("notification_id"),
        _notification.c.status.in_([Status.QUEUED, Status.RETRYING])
        | ((_notification.c.status == Status.SENDING) & (_notification.c.claimed_until < bindparam("now"))),
    )
    .values(
        status=Status.SENDING,
        attempt_count=_notification.c.attempt_count + 1,
        claimed_until=bindparam("lease_ends"),
        updated_at=bindparam("now"),
    )
    .returning(
        _notification.c.channel,
        _notification.c.priority,
        _notification.c.recipient,
        _notification.c.content,
        _notification.c.attempt_count,
        _notification.c.created_at,
    )
)
_FINISH = (
    update(_notification)
    # Only the holder of this attempt's claim may finish it.
    .where(
        _notification.c.id == bindparam("notification_id"),
        _notification.c.status == Status.SENDING,
        _notification.c.attempt_count == bindparam("attempt_number"),
    )
    .values(
        status=bindparam("final_status"),
        delivered_at=bindparam("delivered"),
        last_error=bindparam("error"),
        claimed_until=None,
        updated_at=bindparam("finished"),
    )
)
# Nothing to add if the scheduler already wrote this attempt off as lost (recover_expired_claims).
_INSERT_ATTEMPT = pg_insert(delivery_attempts_table).on_conflict_do_nothing()


def claim_for_delivery(session: Session, *, notification_id: uuid.UUID, lease: timedelta) -> Claim | None:
    now = datetime.now(UTC)
    row = session.execute(
        _CLAIM, {"notification_id": notification_id, "now": now, "lease_ends": now + lease}
    ).one_or_none()
    if row is None:
        return None
    return Claim(
        notification_id=notification_id,
        channel=Channel(row.channel),
        priority=Priority(row.priority),
        recipient=row.recipient,
        content=row.content,
        attempt_number=row.attempt_count,
        created_at=row.created_at,
    )


def record_attempt(
    session: Session,
    *,
    claim: Claim,
    provider: str,
    started_at: datetime,
    error: str | None,
) -> datetime:
    """Store the attempt and move the notification to its outcome; returns when it finished."""
    finished_at = datetime.now(UTC)
    session.execute(
        _INSERT_ATTEMPT,
        {
            "notification_id": claim.notification_id,
            "number": claim.attempt_number,
            "started_at": started_at,
            "finished_at": finished_at,
            "provider": provider,
            "outcome": Outcome.FAILED if error else Outcome.DELIVERED,
            "error": error,
        },
    )
    session.execute(
        _FINISH,
        {
            "notification_id": claim.notification_id,
            "attempt_number": claim.attempt_number,
            "final_status": Status.FAILED if error else Status.DELIVERED,
            "delivered": None if error else finished_at,
            "error": error,
            "finished": finished_at,
        },
    )
    return finished_at


def deliver(
    session_factory: sessionmaker[Session],
    *,
    notification_id: uuid.UUID,
    channel: Channel,
    provider: Provider,
    lease: timedelta,
    clock: Callable[[], float] = time.perf_counter,
) -> DeliveryResult:
    """One delivery attempt of one notification, end to end."""
    with transaction(session_factory) as session:
        claim = claim_for_delivery(session, notification_id=notification_id, lease=lease)
    if claim is None:
        log.info("skipped: not claimable", extra={"notification_id": str(notification_id)})
        metrics.DELIVERIES_SKIPPED.labels(channel).inc()
        return DeliveryResult(Outcome.SKIPPED)

    started_at, started = datetime.now(UTC), clock()
    error: ProviderError | None = None
    try:
        provider.send(claim)
    except ProviderError as raised:
        error = raised
    metrics.PROVIDER_REQUEST.labels(claim.channel, provider.name).observe(clock() - started)

    with transaction(session_factory) as session:
        finished_at = record_attempt(
            session,
            claim=claim,
            provider=provider.name,
            started_at=started_at,
            error=None if error is None else str(error),
        )

    if error is None:
        metrics.DELIVERY_ATTEMPTS.labels(channel, Outcome.DELIVERED).inc()
        metrics.NOTIFICATIONS_DELIVERED.labels(channel, provider.name).inc()
        metrics.DELIVERY_LATENCY.labels(channel, claim.priority).observe(
            (finished_at - claim.created_at).total_seconds()
        )
        return DeliveryResult(Outcome.DELIVERED)
    reason = "permanent" if isinstance(error, PermanentProviderError) else "transient"
    metrics.DELIVERY_ATTEMPTS.labels(channel, Outcome.FAILED).inc()
    metrics.NOTIFICATIONS_FAILED.labels(channel, reason).inc()
    log.warning("delivery failed: %s", error, extra={"notification_id": str(notification_id)})
    return DeliveryResult(Outcome.FAILED, error=str(error))


def recover_expired_claims(session: Session, *, batch_size: int) -> int:
    """Re-queue notifications whose worker died mid-send (lease expired) and owe them a new publish.

    The lost attempt is recorded as failed, so the history shows why a notification was tried again.
    """
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
                "error": "the worker stopped before finishing this attempt (claim expired)",
            }
            for row in expired
        ],
    )
    session.execute(
        insert(OutboxMessage),
        [
            {
                "notification_id": row.id,
                "routing_key": routing_key(Channel(row.channel), Priority(row.priority)),
            }
            for row in expired
        ],
    )
    metrics.CLAIMS_RECOVERED.inc(len(expired))
    return len(expired)
