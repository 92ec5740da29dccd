"""A batch whose webhooks go to a receiver with an open circuit, in a private database (no scheduler
or worker of the `stack` touches it): those wait without using an attempt, the others go."""

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from pulse.db import transaction
from pulse.db.models import DeliveryAttempt, Notification, OutboxMessage
from pulse.delivery.circuit import BreakerSettings, ProviderChain
from pulse.delivery.providers import Claim
from pulse.delivery.retry import RetrySettings
from pulse.delivery.service import Outcome, deliver
from pulse.errors import TransientProviderError
from pulse.notifications.schemas import NotificationRequest
from pulse.notifications.service import accept_notification
from pulse.tenants.service import create_tenant
from pulse.vocabulary import Channel, Priority
from tests.delivery.test_circuit import Receivers


def _webhooks(factory: sessionmaker[Session], tenant_id: uuid.UUID, *urls: str) -> list[uuid.UUID]:
    """Queued webhooks, their publishes taken away (nothing but this test delivers them)."""
    ids = []
    with transaction(factory) as session:
        for url in urls:
            request = NotificationRequest.model_validate(
                {"channel": "webhook", "recipient": url, "content": {"body": "b"}}
            )
            ids.append(accept_notification(session, tenant_id=tenant_id, request=request).notification.id)
        session.execute(delete(OutboxMessage).where(OutboxMessage.notification_id.in_(ids)))
    return ids


def test_webhooks_to_a_receiver_whose_circuit_is_open_wait_without_using_an_attempt(
    factory: sessionmaker[Session],
) -> None:
    with transaction(factory) as session:
        tenant_id = create_tenant(session, name=f"held-back-{uuid.uuid4().hex[:8]}").id
    chain = ProviderChain(
        [Receivers("down.example")], BreakerSettings(failure_threshold=1, cooldown_seconds=30)
    )
    failing = Claim(
        notification_id=uuid.uuid4(),
        tenant_id=tenant_id,
        channel=Channel.WEBHOOK,
        priority=Priority.NORMAL,
        recipient="https://down.example/orders",
        content={"body": "b"},
        attempt_number=1,
        attempts_left=3,
        created_at=datetime.now(UTC),
    )
    with pytest.raises(TransientProviderError):
        chain.send(failing)  # the receiver's circuit is open now
    held, going = _webhooks(factory, tenant_id, "https://down.example/invoices", "https://up.example/orders")

    with ThreadPoolExecutor(2) as senders:
        results = deliver(
            factory,
            notification_ids=[held, going],
            channel=Channel.WEBHOOK,
            providers=chain,
            lease=timedelta(seconds=60),
            retries=RetrySettings(),
            senders=senders,
        )

    assert [(result.outcome, result.retry_in_seconds) for result in results] == [
        (Outcome.POSTPONED, 30),
        (Outcome.DELIVERED, None),
    ]
    with factory() as session:
        rows = {
            row.id: row
            for row in session.scalars(select(Notification).where(Notification.id.in_([held, going])))
        }
        attempts = session.scalars(
            select(DeliveryAttempt.notification_id).where(DeliveryAttempt.notification_id.in_([held, going]))
        )
        assert (rows[held].status, rows[held].attempt_count) == ("queued", 0)
        assert (rows[going].status, rows[going].attempt_count) == ("delivered", 1)
        assert list(attempts) == [going]
