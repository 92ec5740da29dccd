"""Claiming a notification for delivery and recording the outcome of each attempt.

A claim is a lease: the row is `sending` until `claimed_until`. A second copy of the message (broker
redelivery, outbox re-publish) finds the row claimed or finished and does nothing, so a successful
attempt is never repeated. A worker killed mid-send leaves a lease that expires; the scheduler then
re-queues the row (pulse.delivery.recovery).
"""

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from pulse.callbacks.service import CALLBACK_STATUSES, StatusChange, owe_status_callback
from pulse.db import transaction
from pulse.db.models import delivery_attempts_table
from pulse.db.models import notifications_table as _notification
from pulse.delivery.circuit import ProviderChain
from pulse.delivery.providers import Claim
from pulse.delivery.retry import RetrySettings
from pulse.errors import PermanentProviderError, ProviderError, TransientProviderError
from pulse.observability import metrics
from pulse.vocabulary import Channel, Priority, Status

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRYING = "retrying"
    FAILED = "failed"
    SKIPPED = "skipped"  # Already finished or claimed by another worker.
    POSTPONED = "postponed"  # Not tried: every provider's circuit is open.


@dataclass(frozen=True)
class DeliveryResult:
    outcome: Outcome
    error: str | None = None
    retry_in_seconds: int | None = None


# The statements every delivery runs, built once: values arrive as bound parameters, so SQLAlchemy
# reuses one compiled form instead of building a cache key per call.
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
        next_attempt_at=None,
        updated_at=bindparam("now"),
    )
    .returning(
        _notification.c.tenant_id,
        _notification.c.channel,
        _notification.c.priority,
        _notification.c.recipient,
        _notification.c.content,
        _notification.c.attempt_count,
        _notification.c.attempts_before_replay,
        _notification.c.created_at,
        # For status callbacks: read with the claim, so that owing one costs no extra query.
        _notification.c.user_id,
        _notification.c["metadata"],
        _notification.c.callback_url,
        _notification.c.callback_for,
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
        status=bindparam("new_status"),
        delivered_at=bindparam("delivered"),
        failed_at=bindparam("failed"),
        next_attempt_at=bindparam("next_attempt"),
        last_error=bindparam("error"),
        claimed_until=None,
        updated_at=bindparam("finished"),
    )
)
_POSTPONE_RETRY = (
    update(_notification)
    .where(_notification.c.id == bindparam("notification_id"), _notification.c.status == Status.RETRYING)
    .values(next_attempt_at=bindparam("next"))
)
# Nothing to add if the scheduler already wrote this attempt off as lost (recover_expired_claims).
_INSERT_ATTEMPT = pg_insert(delivery_attempts_table).on_conflict_do_nothing()


def claim_for_delivery(
    session: Session, *, notification_id: uuid.UUID, lease: timedelta, retries: RetrySettings
) -> Claim | None:
    now = datetime.now(UTC)
    row = session.execute(
        _CLAIM, {"notification_id": notification_id, "now": now, "lease_ends": now + lease}
    ).one_or_none()
    if row is None:
        return None
    priority = Priority(row.priority)
    attempts_used = row.attempt_count - row.attempts_before_replay
    return Claim(
        notification_id=notification_id,
        tenant_id=row.tenant_id,
        channel=Channel(row.channel),
        priority=priority,
        recipient=row.recipient,
        content=row.content,
        attempt_number=row.attempt_count,
        attempts_left=retries.plan_for(priority).attempts - attempts_used,
        created_at=row.created_at,
        user_id=row.user_id,
        metadata=row.metadata,
        callback_url=row.callback_url,
        callback_for=row.callback_for,
    )


def record_attempt(
    session: Session,
    *,
    claim: Claim,
    provider: str,
    started_at: datetime,
    error: str | None,
    retry_in_seconds: int | None = None,
    details: dict[str, Any] | None = None,
) -> datetime:
    """Store the attempt (with what the provider reported, `details`) and move the notification on:
    delivered, retrying (when `retry_in_seconds` is given) or failed, owing its status callback when
    it has a `callback_url` and is now delivered or failed. Returns when the attempt finished."""
    finished_at = datetime.now(UTC)
    next_attempt_at = None
    if error is None:
        new_status = Status.DELIVERED
    elif retry_in_seconds is None:
        new_status = Status.FAILED
    else:
        new_status = Status.RETRYING
        next_attempt_at = finished_at + timedelta(seconds=retry_in_seconds)
    delivered_at = finished_at if new_status is Status.DELIVERED else None
    failed_at = finished_at if new_status is Status.FAILED else None
    session.execute(
        _INSERT_ATTEMPT,
        {
            "notification_id": claim.notification_id,
            "number": claim.attempt_number,
            "started_at": started_at,
            "finished_at": finished_at,
            "provider": provider,
            "outcome": Outcome.DELIVERED if error is None else Outcome.FAILED,
            "error": error,
            "details": details or {},
        },
    )
    finished = session.execute(
        _FINISH,
        {
            "notification_id": claim.notification_id,
            "attempt_number": claim.attempt_number,
            "new_status": new_status,
            "delivered": delivered_at,
            "failed": failed_at,
            "next_attempt": next_attempt_at,
            "error": error,
            "finished": finished_at,
        },
    )
    # No row finished means the claim was lost (expired and recovered): the status did not change,
    # so there is nothing to report; whoever delivers the notification next owes the callback.
    callback_url = claim.callback_url if new_status in CALLBACK_STATUSES else None
    if callback_url is not None and finished.rowcount:  # type: ignore[attr-defined]
        owe_status_callback(
            session,
            callback_url=callback_url,
            change=StatusChange(
                notification_id=claim.notification_id,
                tenant_id=claim.tenant_id,
                channel=claim.channel,
                priority=claim.priority,
                recipient=claim.recipient,
                user_id=claim.user_id,
                status=new_status,
                changed_at=finished_at,
                attempt_count=claim.attempt_number,
                delivered_at=delivered_at,
                failed_at=failed_at,
                last_error=error,
                metadata=claim.metadata,
            ),
        )
    return finished_at


# Once the provider accepted a message, its record must land, or the claim would expire and the
# message be sent again: a database blip is waited out (well within the claim's lease).
_until_recorded = retry(
    retry=retry_if_exception_type(DBAPIError),
    wait=wait_exponential(multiplier=0.2, max=5),
    stop=stop_after_delay(30),
    reraise=True,
)


def _postponed(
    session_factory: sessionmaker[Session], notification_id: uuid.UUID, wait: int, context: dict[str, str]
) -> DeliveryResult:
    """Every provider's circuit (for this destination) is open: wait without a claim, so no attempt
    is used up. A retrying notification's next attempt moves too, or the scheduler would think it
    overdue."""
    with transaction(session_factory) as session:
        session.execute(
            _POSTPONE_RETRY,
            {"notification_id": notification_id, "next": datetime.now(UTC) + timedelta(seconds=wait)},
        )
    log.info("providers unavailable, postponed %ss", wait, extra=context)
    return DeliveryResult(Outcome.POSTPONED, retry_in_seconds=wait)


def deliver(
    session_factory: sessionmaker[Session],
    *,
    notification_id: uuid.UUID,
    channel: Channel,
    providers: ProviderChain,
    lease: timedelta,
    retries: RetrySettings,
) -> DeliveryResult:
    """One delivery attempt of one notification, end to end."""
    context: dict[str, str] = {"notification_id": str(notification_id), "channel": channel}
    if wait := providers.wait_seconds():
        return _postponed(session_factory, notification_id, wait, context)
    with transaction(session_factory) as session:
        claim = claim_for_delivery(session, notification_id=notification_id, lease=lease, retries=retries)
        # A destination's own circuit (a webhook receiver's) is known once the claim says where it
        # goes: while that one is open, the claim is undone, so no attempt is used up.
        if claim is not None and (wait := providers.wait_seconds(claim)):
            session.rollback()
    if wait:
        return _postponed(session_factory, notification_id, wait, context)
    if claim is None:
        log.info("skipped: not claimable", extra=context)
        metrics.DELIVERIES_SKIPPED.labels(channel).inc()
        return DeliveryResult(Outcome.SKIPPED)
    context["tenant"] = str(claim.tenant_id)

    started_at = datetime.now(UTC)
    error: ProviderError | None = None
    details: dict[str, Any] = {}
    try:
        sent = providers.send(claim)
        provider, details = sent.provider, sent.details
    except ProviderError as raised:
        error, provider = raised, raised.provider or providers.names[0]

    retry_in = None
    if isinstance(error, TransientProviderError) and claim.attempts_left > 0:
        plan = retries.plan_for(claim.priority)
        retry_in = plan.delay_seconds(plan.attempts - claim.attempts_left, retry_after=error.retry_after)

    @_until_recorded
    def record() -> datetime:
        with transaction(session_factory) as session:
            return record_attempt(
                session,
                claim=claim,
                provider=provider,
                started_at=started_at,
                error=None if error is None else str(error),
                retry_in_seconds=retry_in,
                details=details,
            )

    finished_at = record()
    if error is None:
        log.info("delivered", extra={**context, "provider": provider, "attempt": claim.attempt_number})
        metrics.DELIVERY_ATTEMPTS.labels(channel, Outcome.DELIVERED).inc()
        metrics.NOTIFICATIONS_DELIVERED.labels(channel, provider).inc()
        metrics.DELIVERY_LATENCY.labels(channel, claim.priority).observe(
            (finished_at - claim.created_at).total_seconds()
        )
        return DeliveryResult(Outcome.DELIVERED)
    metrics.DELIVERY_ATTEMPTS.labels(channel, Outcome.FAILED).inc()
    if retry_in is not None:
        log.info("attempt failed, retrying in %ss: %s", retry_in, error, extra=context)
        return DeliveryResult(Outcome.RETRYING, error=str(error), retry_in_seconds=retry_in)
    reason = "permanent" if isinstance(error, PermanentProviderError) else "retries_exhausted"
    metrics.NOTIFICATIONS_FAILED.labels(channel, reason).inc()
    log.warning("delivery failed: %s", error, extra=context)
    return DeliveryResult(Outcome.FAILED, error=str(error))
