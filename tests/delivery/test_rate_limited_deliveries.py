"""Deliveries held to a provider's send-rate limit, or throttled by the provider, in a private database
(no scheduler or worker of the `stack` touches it): what cannot go now waits without using an attempt."""

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from pulse.db import transaction
from pulse.db.models import DeliveryAttempt, Notification, OutboxMessage, ProviderSendBucket
from pulse.delivery.circuit import BreakerSettings, ProviderChain
from pulse.delivery.rates import SendRates
from pulse.delivery.retry import RetrySettings
from pulse.delivery.service import DeliveryResult, Outcome, deliver
from pulse.errors import ProviderThrottled
from pulse.notifications.schemas import NotificationRequest
from pulse.notifications.service import accept_notification
from pulse.send_rate import SendRate
from pulse.tenants.service import create_tenant
from pulse.vocabulary import Channel
from tests.delivery.test_circuit import ScriptedProvider

EMAIL = {"subject": "s", "body": "b"}


@pytest.fixture(scope="module")
def tenant_id(factory: sessionmaker[Session]) -> uuid.UUID:
    with transaction(factory) as session:
        return create_tenant(session, name=f"send-rates-{uuid.uuid4().hex[:8]}").id


@pytest.fixture
def senders() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as pool:
        yield pool


def _emails(factory: sessionmaker[Session], tenant_id: uuid.UUID, count: int) -> list[uuid.UUID]:
    """Queued emails, their publishes taken away (nothing but this test delivers them)."""
    ids = []
    with transaction(factory) as session:
        for index in range(count):
            email = {"channel": "email", "recipient": f"r{index}@example.com", "content": EMAIL}
            request = NotificationRequest.model_validate(email)
            ids.append(accept_notification(session, tenant_id=tenant_id, request=request).notification.id)
        session.execute(delete(OutboxMessage).where(OutboxMessage.notification_id.in_(ids)))
    return ids


def _deliver(
    factory: sessionmaker[Session],
    ids: list[uuid.UUID],
    provider: ScriptedProvider,
    rates: SendRates,
    senders: ThreadPoolExecutor,
) -> list[DeliveryResult]:
    return deliver(
        factory,
        notification_ids=ids,
        channel=Channel.EMAIL,
        providers=ProviderChain([provider], BreakerSettings()),
        lease=timedelta(seconds=60),
        retries=RetrySettings(),
        senders=senders,
        rates=rates,
    )


def _rows(factory: sessionmaker[Session], ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[str, int, int]]:
    """Each notification's status, attempt count and recorded attempts."""
    with factory() as session:
        attempts = session.scalars(
            select(DeliveryAttempt.notification_id).where(DeliveryAttempt.notification_id.in_(ids))
        )
        recorded = list(attempts)
        return {
            row.id: (row.status, row.attempt_count, recorded.count(row.id))
            for row in session.scalars(select(Notification).where(Notification.id.in_(ids)))
        }


def test_sends_beyond_the_limit_wait_without_using_an_attempt(
    factory: sessionmaker[Session], tenant_id: uuid.UUID, senders: ThreadPoolExecutor
) -> None:
    provider = ScriptedProvider(f"smtp-{uuid.uuid4().hex[:8]}")
    rates = SendRates({provider.name: SendRate(per_second=1, burst=2)}, max_wait_seconds=0)
    ids = _emails(factory, tenant_id, 5)

    results = _deliver(factory, ids, provider, rates, senders)

    assert [result.outcome for result in results].count(Outcome.DELIVERED) == 2 == provider.sent
    waiting = [
        notification_id
        for notification_id, result in zip(ids, results, strict=True)
        if result.outcome is Outcome.POSTPONED
    ]
    assert len(waiting) == 3
    assert all(
        result.retry_in_seconds and result.retry_in_seconds >= 1
        for result in results
        if result.outcome is Outcome.POSTPONED
    )
    rows = _rows(factory, ids)
    assert sorted(rows.values()) == [("delivered", 1, 1)] * 2 + [("queued", 0, 0)] * 3


def test_a_throttled_send_gives_its_attempt_back_and_pauses_the_provider(
    factory: sessionmaker[Session], tenant_id: uuid.UUID, senders: ThreadPoolExecutor
) -> None:
    name = f"smtp-{uuid.uuid4().hex[:8]}"
    rates = SendRates({name: SendRate(per_second=100, burst=100)}, max_wait_seconds=0)
    first, retried = _emails(factory, tenant_id, 2)
    with transaction(factory) as session:  # One attempt already failed.
        session.execute(
            update(Notification).where(Notification.id == retried).values(status="retrying", attempt_count=1)
        )
    provider = ScriptedProvider(name, *[ProviderThrottled("SMTP 421 slow down", retry_after=3)] * 2)

    results = _deliver(factory, [first, retried], provider, rates, senders)

    assert [(result.outcome, result.retry_in_seconds) for result in results] == [(Outcome.POSTPONED, 3)] * 2
    assert _rows(factory, [first, retried]) == {first: ("queued", 0, 0), retried: ("retrying", 1, 0)}
    with factory() as session:
        assert session.get_one(Notification, retried).next_attempt_at is not None
        bucket = session.get_one(ProviderSendBucket, name)
        assert bucket.paused_until is not None and bucket.paused_until > datetime.now(UTC)
        assert bucket.slowdown == 0.5

    # Paused: the next batch does not reach the provider, and still uses no attempt.
    again = _deliver(factory, [first], provider, rates, senders)
    assert again[0].outcome is Outcome.POSTPONED and provider.sent == 2
    assert _rows(factory, [first]) == {first: ("queued", 0, 0)}


def test_a_notification_throttled_for_a_day_starts_using_its_attempts(
    factory: sessionmaker[Session], tenant_id: uuid.UUID, senders: ThreadPoolExecutor
) -> None:
    (old,) = _emails(factory, tenant_id, 1)
    with transaction(factory) as session:
        session.execute(
            update(Notification)
            .where(Notification.id == old)
            .values(created_at=datetime.now(UTC) - timedelta(days=2))
        )
    provider = ScriptedProvider("smtp", ProviderThrottled("SMTP 421 slow down"))

    (result,) = _deliver(factory, [old], provider, SendRates({}, max_wait_seconds=0), senders)

    assert result.outcome is Outcome.RETRYING
    assert _rows(factory, [old]) == {old: ("retrying", 1, 1)}
