"""Claiming notifications for delivery and recording the outcome of each attempt, a batch at a time.

A claim is a lease: the row is `sending` until `claimed_until`. A second copy of the message (broker
redelivery, outbox re-publish) finds the row claimed or finished and does nothing, so a successful
attempt is never repeated. A worker killed mid-send leaves a lease that expires; the scheduler then
re-queues the row (pulse.delivery.recovery).

A worker takes its messages in batches: one statement claims the batch, the sends run in parallel,
and one transaction records every attempt — two transactions per batch instead of two per message.
"""

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import any_, bindparam, case, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.types import DateTime, Integer, Text, Uuid
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from pulse.callbacks.service import CALLBACK_STATUSES, StatusChange, owe_status_callback
from pulse.db import transaction
from pulse.db.models import delivery_attempts_table
from pulse.db.models import notifications_table as _notification
from pulse.delivery.circuit import ProviderChain
from pulse.delivery.providers import Claim
from pulse.delivery.rates import (
    DEFAULT_PAUSE_SECONDS,
    NO_LIMITS,
    Scheduled,
    SendRates,
    wait_for_slot,
    whole_seconds,
)
from pulse.delivery.retry import RetrySettings
from pulse.errors import (
    PermanentProviderError,
    ProviderError,
    ProviderThrottled,
    TransientProviderError,
)
from pulse.observability import metrics
from pulse.vocabulary import Channel, Priority, Status

log = logging.getLogger(__name__)

# A provider's "too many" puts the notification back without using an attempt, for this long after
# it was accepted; later, a throttled send counts as a failed attempt, so none waits for ever.
THROTTLED_FOR_FREE = timedelta(hours=24)


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


# The statements every batch runs, built once: values arrive as bound parameters (arrays for a
# batch), so SQLAlchemy reuses one compiled form whatever the batch size.
_CLAIM = (
    update(_notification)
    .where(
        _notification.c.id == any_(bindparam("notification_ids", type_=ARRAY(Uuid))),
        _notification.c.status.in_([Status.QUEUED, Status.RETRYING])
        # A lease that expired may be taken over while attempts are left; once they are spent, the
        # scheduler's recovery records the lost attempt and dead-letters the notification.
        | (
            (_notification.c.status == Status.SENDING)
            & (_notification.c.claimed_until < bindparam("now"))
            & (
                _notification.c.attempt_count - _notification.c.attempts_before_replay
                < case(
                    *(
                        (_notification.c.priority == priority, bindparam(f"{priority}_attempts"))
                        for priority in Priority
                    )
                )
            )
        ),
    )
    .values(
        status=Status.SENDING,
        attempt_count=_notification.c.attempt_count + 1,
        claimed_until=bindparam("lease_ends"),
        next_attempt_at=None,
        updated_at=bindparam("now"),
    )
    .returning(
        _notification.c.id,
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
# Only the holder of an attempt's claim may finish it; the ids returned are the ones it finished.
_FINISH = text(
    """
    UPDATE notifications AS n SET
        status = finished.status, delivered_at = finished.delivered_at, failed_at = finished.failed_at,
        next_attempt_at = finished.next_attempt_at, last_error = finished.error,
        claimed_until = NULL, updated_at = finished.finished_at
    FROM unnest(:ids, :attempt_numbers, :statuses, :delivered, :failed, :next_attempts, :errors, :finished)
        AS finished (id, attempt_number, status, delivered_at, failed_at, next_attempt_at, error, finished_at)
    WHERE n.id = finished.id AND n.status = 'sending' AND n.attempt_count = finished.attempt_number
    RETURNING n.id
    """
).bindparams(
    bindparam("ids", type_=ARRAY(Uuid)),
    bindparam("attempt_numbers", type_=ARRAY(Integer)),
    bindparam("statuses", type_=ARRAY(Text)),
    bindparam("delivered", type_=ARRAY(DateTime(timezone=True))),
    bindparam("failed", type_=ARRAY(DateTime(timezone=True))),
    bindparam("next_attempts", type_=ARRAY(DateTime(timezone=True))),
    bindparam("errors", type_=ARRAY(Text)),
    bindparam("finished", type_=ARRAY(DateTime(timezone=True))),
)
_POSTPONE_RETRIES = (
    update(_notification)
    .where(
        _notification.c.id == any_(bindparam("notification_ids", type_=ARRAY(Uuid))),
        _notification.c.status == Status.RETRYING,
    )
    .values(next_attempt_at=bindparam("next"))
)
# Undoes claims whose send was not made (no send-rate token in time) or was throttled: the attempt
# is given back, and the notification waits as before it was claimed (`queued` if it had no attempt
# yet, else `retrying`, its next attempt at `next_attempts`).
_RELEASE = text(
    """
    UPDATE notifications AS n SET
        status = CASE WHEN n.attempt_count - 1 > n.attempts_before_replay THEN 'retrying' ELSE 'queued' END,
        next_attempt_at = CASE WHEN n.attempt_count - 1 > n.attempts_before_replay
                               THEN released.next_attempt_at END,
        attempt_count = n.attempt_count - 1, claimed_until = NULL, updated_at = :now
    FROM unnest(:ids, :attempt_numbers, :next_attempts) AS released (id, attempt_number, next_attempt_at)
    WHERE n.id = released.id AND n.status = 'sending' AND n.attempt_count = released.attempt_number
    """
).bindparams(
    bindparam("ids", type_=ARRAY(Uuid)),
    bindparam("attempt_numbers", type_=ARRAY(Integer)),
    bindparam("next_attempts", type_=ARRAY(DateTime(timezone=True))),
)
# Nothing to add if the scheduler already wrote this attempt off as lost (recover_expired_claims).
_INSERT_ATTEMPTS = pg_insert(delivery_attempts_table).on_conflict_do_nothing()


def claim_for_delivery(
    session: Session, *, notification_ids: Sequence[uuid.UUID], lease: timedelta, retries: RetrySettings
) -> dict[uuid.UUID, Claim]:
    """Claim those of the notifications that are claimable now; the others are missing from the result."""
    now = datetime.now(UTC)
    budgets = {f"{priority}_attempts": retries.plan_for(priority).attempts for priority in Priority}
    rows = session.execute(
        _CLAIM, {"notification_ids": list(notification_ids), "now": now, "lease_ends": now + lease, **budgets}
    ).all()
    claims = {}
    for row in rows:
        priority = Priority(row.priority)
        attempts_used = row.attempt_count - row.attempts_before_replay
        claims[row.id] = Claim(
            notification_id=row.id,
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
    return claims


@dataclass(frozen=True)
class Attempt:
    """One finished try of a claimed notification: delivered when `error` is None; else retrying
    when `retry_in_seconds` is set, failed when not."""

    claim: Claim
    provider: str
    started_at: datetime
    finished_at: datetime
    error: str | None = None
    retry_in_seconds: int | None = None
    permanent: bool = False  # The provider refused the message for good.
    # The provider throttled (ProviderThrottled): the seconds it asked us to pause.
    throttled_for: float | None = None
    # What the provider reported (a Message-ID, an SMS's segments), kept with the attempt.
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def new_status(self) -> Status:
        if self.error is None:
            return Status.DELIVERED
        return Status.FAILED if self.retry_in_seconds is None else Status.RETRYING

    @property
    def delivered_at(self) -> datetime | None:
        return self.finished_at if self.new_status is Status.DELIVERED else None

    @property
    def failed_at(self) -> datetime | None:
        return self.finished_at if self.new_status is Status.FAILED else None

    @property
    def next_attempt_at(self) -> datetime | None:
        if self.retry_in_seconds is None or self.error is None:
            return None
        return self.finished_at + timedelta(seconds=self.retry_in_seconds)


def record_attempts(session: Session, attempts: Sequence[Attempt]) -> None:
    """Store the attempts and move their notifications on (delivered, retrying or failed), owing a
    status callback for each that has a `callback_url` and is now delivered or failed."""
    if not attempts:
        return
    session.execute(
        _INSERT_ATTEMPTS,
        [
            {
                "notification_id": attempt.claim.notification_id,
                "number": attempt.claim.attempt_number,
                "started_at": attempt.started_at,
                "finished_at": attempt.finished_at,
                "provider": attempt.provider,
                "outcome": Outcome.DELIVERED if attempt.error is None else Outcome.FAILED,
                "error": attempt.error,
                "details": attempt.details,
            }
            for attempt in attempts
        ],
    )
    finished_ids = set(
        session.scalars(
            _FINISH,
            {
                "ids": [attempt.claim.notification_id for attempt in attempts],
                "attempt_numbers": [attempt.claim.attempt_number for attempt in attempts],
                "statuses": [str(attempt.new_status) for attempt in attempts],
                "delivered": [attempt.delivered_at for attempt in attempts],
                "failed": [attempt.failed_at for attempt in attempts],
                "next_attempts": [attempt.next_attempt_at for attempt in attempts],
                "errors": [attempt.error for attempt in attempts],
                "finished": [attempt.finished_at for attempt in attempts],
            },
        )
    )
    # A notification that did not finish lost its claim (expired and recovered): its status did not
    # change, so there is nothing to report; whoever delivers it next owes the callback.
    for attempt in attempts:
        claim, status = attempt.claim, attempt.new_status
        if claim.callback_url is None or status not in CALLBACK_STATUSES:
            continue
        if claim.notification_id not in finished_ids:
            continue
        owe_status_callback(
            session,
            callback_url=claim.callback_url,
            change=StatusChange(
                notification_id=claim.notification_id,
                tenant_id=claim.tenant_id,
                channel=claim.channel,
                priority=claim.priority,
                recipient=claim.recipient,
                user_id=claim.user_id,
                status=status,
                changed_at=attempt.finished_at,
                attempt_count=claim.attempt_number,
                delivered_at=attempt.delivered_at,
                failed_at=attempt.failed_at,
                last_error=attempt.error,
                metadata=claim.metadata,
            ),
        )


def release_claims(session: Session, waits: Sequence[tuple[Claim, int]]) -> None:
    """Give the claims' attempts back: their notifications wait as before, for the seconds given."""
    if not waits:
        return
    now = datetime.now(UTC)
    session.execute(
        _RELEASE,
        {
            "ids": [claim.notification_id for claim, _ in waits],
            "attempt_numbers": [claim.attempt_number for claim, _ in waits],
            "next_attempts": [now + timedelta(seconds=wait) for _, wait in waits],
            "now": now,
        },
    )


# Once a provider accepted a message, its record must land, or the claim would expire and the
# message be sent again: a database blip is waited out (well within the claim's lease).
_until_recorded = retry(
    retry=retry_if_exception_type(DBAPIError),
    wait=wait_exponential(multiplier=0.2, max=5),
    stop=stop_after_delay(30),
    reraise=True,
)


def deliver(
    session_factory: sessionmaker[Session],
    *,
    notification_ids: Sequence[uuid.UUID],
    channel: Channel,
    providers: ProviderChain,
    lease: timedelta,
    retries: RetrySettings,
    senders: Executor,
    request_ids: Mapping[uuid.UUID, str | None] | None = None,
    rates: SendRates = NO_LIMITS,
) -> list[DeliveryResult]:
    """One delivery attempt of each notification, end to end: claim them all (and book their
    providers' send-rate tokens) in one transaction, send them in parallel on `senders`, each once
    its token has come, record every attempt in one transaction. Returns each one's result, in order.
    A send without a token in time, or throttled by its provider, is given its attempt back and
    postponed.
    `request_ids` (of the requests that accepted them) go into each notification's log lines."""
    request_ids = request_ids or {}
    if wait := providers.wait_seconds():
        postponed = _postpone(session_factory, dict.fromkeys(notification_ids, wait), channel, request_ids)
        return [postponed[notification_id] for notification_id in notification_ids]
    sends, short, held_back = _claim(
        session_factory,
        list(set(notification_ids)),
        providers=providers,
        lease=lease,
        retries=retries,
        rates=rates,
    )
    postponed = _postpone(session_factory, held_back, channel, request_ids)
    attempts = _send(sends, providers, retries, senders)
    free_after = datetime.now(UTC) - THROTTLED_FOR_FREE
    throttled = [
        (attempt.claim, whole_seconds(attempt.throttled_for))
        for attempt in attempts
        if attempt.throttled_for is not None and attempt.claim.created_at > free_after
    ]
    given_back = {claim.notification_id for claim, _ in throttled}
    tried = [attempt for attempt in attempts if attempt.claim.notification_id not in given_back]
    _until_recorded(_record)(session_factory, tried, throttled, attempts, rates, providers)
    reported = {attempt.claim.notification_id: _report(attempt, channel, request_ids) for attempt in tried}
    reported.update(postponed)
    reported.update(_report_released(short, "no send-rate token in time", channel, request_ids))
    reported.update(_report_released(throttled, "throttled by the provider", channel, request_ids))
    results = []
    for notification_id in notification_ids:
        # A notification named twice in one batch is attempted once: its second copy is skipped.
        if (result := reported.pop(notification_id, None)) is None:
            log.info("skipped: not claimable", extra=_context(notification_id, channel, request_ids))
            metrics.DELIVERIES_SKIPPED.labels(channel).inc()
            result = DeliveryResult(Outcome.SKIPPED)
        results.append(result)
    return results


def _claim(
    session_factory: sessionmaker[Session],
    notification_ids: list[uuid.UUID],
    *,
    providers: ProviderChain,
    lease: timedelta,
    retries: RetrySettings,
    rates: SendRates,
) -> tuple[list[Scheduled], list[tuple[Claim, int]], dict[uuid.UUID, int]]:
    """Claim the notifications and book their send-rate tokens: returns the sends to make, when, and
    the claims given back for lack of a token in time, with the seconds to wait. Apart, with the
    seconds to wait, those whose destination's own circuit (a webhook receiver's, known once the claim
    says where it goes) is open: their claims are undone (the claim rolled back, the others claimed
    again), so no attempt is used."""
    with transaction(session_factory) as session:
        claims = claim_for_delivery(session, notification_ids=notification_ids, lease=lease, retries=retries)
        held_back = {
            notification_id: wait
            for notification_id, claim in claims.items()
            if (wait := providers.wait_seconds(claim))
        }
        if not held_back:
            return (*_book(session, list(claims.values()), providers, rates), {})
        session.rollback()
    the_others = [notification_id for notification_id in notification_ids if notification_id not in held_back]
    with transaction(session_factory) as session:
        claims = claim_for_delivery(session, notification_ids=the_others, lease=lease, retries=retries)
        return (*_book(session, list(claims.values()), providers, rates), held_back)


def _book(
    session: Session, claims: list[Claim], providers: ProviderChain, rates: SendRates
) -> tuple[list[Scheduled], list[tuple[Claim, int]]]:
    """The claims' sends, each with its send-rate token's delay; those without a token in time are
    given back at once (in the claim's transaction), with the seconds to wait."""
    if not rates.limited:
        return [Scheduled(claim, 0.0) for claim in claims], []
    sends, short = rates.schedule(session, claims, providers)
    waits = [(claim, whole_seconds(wait)) for claim, wait in short]
    release_claims(session, waits)
    return sends, waits


def _send(
    sends: list[Scheduled], providers: ProviderChain, retries: RetrySettings, senders: Executor
) -> list[Attempt]:
    """Hand each send to the sender threads once its token has come (this thread waits, so that
    waiting sends hold no sender thread) and collect their attempts."""
    start = time.monotonic()
    tries = []
    for send in sorted(sends, key=lambda send: send.delay):
        wait_for_slot(start, send)
        tries.append(senders.submit(_try, send.claim, providers, retries))
    return [attempt.result() for attempt in tries]


def _postpone(
    session_factory: sessionmaker[Session],
    waits: Mapping[uuid.UUID, int],
    channel: Channel,
    request_ids: Mapping[uuid.UUID, str | None],
) -> dict[uuid.UUID, DeliveryResult]:
    """Not tried: every provider's circuit (for their destination) is open. They wait without a claim,
    so no attempt is used up; a retrying notification's next attempt moves too, or the scheduler
    would think it overdue."""
    if not waits:
        return {}
    now = datetime.now(UTC)
    with transaction(session_factory) as session:
        for wait in set(waits.values()):
            session.execute(
                _POSTPONE_RETRIES,
                {
                    "notification_ids": [
                        notification_id for notification_id in waits if waits[notification_id] == wait
                    ],
                    "next": now + timedelta(seconds=wait),
                },
            )
    for notification_id, wait in waits.items():
        log.info(
            "providers unavailable, postponed %ss",
            wait,
            extra=_context(notification_id, channel, request_ids),
        )
    return {
        notification_id: DeliveryResult(Outcome.POSTPONED, retry_in_seconds=wait)
        for notification_id, wait in waits.items()
    }


def _try(claim: Claim, providers: ProviderChain, retries: RetrySettings) -> Attempt:
    started_at = datetime.now(UTC)
    try:
        sent = providers.send(claim)
    except ProviderThrottled as error:
        metrics.PROVIDER_THROTTLED.labels(error.provider or providers.names[0]).inc()
        pause = DEFAULT_PAUSE_SECONDS if error.retry_after is None else error.retry_after
        return _failed(claim, providers, retries, error, started_at, throttled_for=pause)
    except ProviderError as error:
        return _failed(claim, providers, retries, error, started_at)
    return Attempt(
        claim=claim,
        provider=sent.provider,
        started_at=started_at,
        finished_at=datetime.now(UTC),
        details=sent.details,
    )


def _failed(
    claim: Claim,
    providers: ProviderChain,
    retries: RetrySettings,
    error: ProviderError,
    started_at: datetime,
    *,
    throttled_for: float | None = None,
) -> Attempt:
    retry_in = None
    if isinstance(error, TransientProviderError) and claim.attempts_left > 0:
        plan = retries.plan_for(claim.priority)
        retry_in = plan.delay_seconds(plan.attempts - claim.attempts_left, retry_after=error.retry_after)
    return Attempt(
        claim=claim,
        provider=error.provider or providers.names[0],
        started_at=started_at,
        finished_at=datetime.now(UTC),
        error=str(error),
        retry_in_seconds=retry_in,
        permanent=isinstance(error, PermanentProviderError),
        throttled_for=throttled_for,
    )


def _record(
    session_factory: sessionmaker[Session],
    tried: list[Attempt],
    throttled: Sequence[tuple[Claim, int]],
    attempts: list[Attempt],
    rates: SendRates,
    providers: ProviderChain,
) -> None:
    """Record the attempts tried, give the throttled ones back, and slow down the buckets of the
    providers that throttled (the sends too old to be throttled for free included)."""
    with transaction(session_factory) as session:
        record_attempts(session, tried)
        release_claims(session, throttled)
        rates.throttled(
            session,
            [
                (providers.named(attempt.provider), attempt.claim, attempt.throttled_for)
                for attempt in attempts
                if attempt.throttled_for is not None
            ],
        )


def _report_released(
    waits: Sequence[tuple[Claim, int]],
    why: str,
    channel: Channel,
    request_ids: Mapping[uuid.UUID, str | None],
) -> dict[uuid.UUID, DeliveryResult]:
    for claim, wait in waits:
        log.info("%s, postponed %ss", why, wait, extra=_context(claim.notification_id, channel, request_ids))
    return {
        claim.notification_id: DeliveryResult(Outcome.POSTPONED, retry_in_seconds=wait)
        for claim, wait in waits
    }


def _report(
    attempt: Attempt, channel: Channel, request_ids: Mapping[uuid.UUID, str | None]
) -> DeliveryResult:
    """Log and count the attempt; what the worker does with its message follows from the result."""
    claim = attempt.claim
    context = {**_context(claim.notification_id, channel, request_ids), "tenant": str(claim.tenant_id)}
    if attempt.error is None:
        # The one line per delivery, with what the provider reported (a message id, an SMS's segments):
        # nested, so that no key of theirs can clash with a LogRecord attribute.
        context.update(provider=attempt.provider, attempt=claim.attempt_number, details=attempt.details)
        log.info("delivered", extra=context)
        metrics.DELIVERY_ATTEMPTS.labels(channel, Outcome.DELIVERED).inc()
        metrics.NOTIFICATIONS_DELIVERED.labels(channel, attempt.provider).inc()
        metrics.DELIVERY_LATENCY.labels(channel, claim.priority).observe(
            (attempt.finished_at - claim.created_at).total_seconds()
        )
        return DeliveryResult(Outcome.DELIVERED)
    metrics.DELIVERY_ATTEMPTS.labels(channel, Outcome.FAILED).inc()
    if (retry_in := attempt.retry_in_seconds) is not None:
        log.info("attempt failed, retrying in %ss: %s", retry_in, attempt.error, extra=context)
        return DeliveryResult(Outcome.RETRYING, error=attempt.error, retry_in_seconds=retry_in)
    reason = "permanent" if attempt.permanent else "retries_exhausted"
    metrics.NOTIFICATIONS_FAILED.labels(channel, reason).inc()
    log.warning("delivery failed: %s", attempt.error, extra=context)
    return DeliveryResult(Outcome.FAILED, error=attempt.error)


def _context(
    notification_id: uuid.UUID, channel: Channel, request_ids: Mapping[uuid.UUID, str | None]
) -> dict[str, Any]:
    context = {"notification_id": str(notification_id), "channel": channel}
    if (accepted_by := request_ids.get(notification_id)) is not None:
        # Given here, it wins over the log formatter's (batch-wide) context variable.
        context["request_id"] = accepted_by
    return context
