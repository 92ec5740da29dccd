"""The intake: sends of concurrent requests accepted in shared transactions, each with its own outcome."""

import asyncio
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from pulse.db import transaction
from pulse.db.models import IdempotencyRecord, Notification
from pulse.errors import RateLimited
from pulse.notifications.intake import Intake, Send
from pulse.notifications.schemas import NotificationRequest
from pulse.notifications.service import Accepted
from pulse.rate_limits.service import RateLimit, SendLimits
from pulse.tenants.service import create_tenant
from pulse.timing.policy import NO_QUIET_HOURS_UTC

RATE = SendLimits(per_recipient=RateLimit(limit=3, window_seconds=60), per_tenant=RateLimit(0, 60))


@pytest.fixture(scope="module")
def intake(factory: sessionmaker[Session]) -> Iterator[Intake]:
    intake = Intake(factory, publish_grace=timedelta(seconds=5), threads=2)
    yield intake
    intake.close()


def _tenant(factory: sessionmaker[Session]) -> uuid.UUID:
    with transaction(factory) as session:
        return create_tenant(session, name=f"intake-{uuid.uuid4().hex[:8]}").id


def _send(tenant_id: uuid.UUID, recipient: str, *, idempotency_key: str | None = None) -> Send:
    request = NotificationRequest.model_validate(
        {"channel": "email", "recipient": recipient, "content": {"subject": "Hi", "body": "Hello"}}
    )
    return Send(tenant_id, request, NO_QUIET_HOURS_UTC, RATE, idempotency_key)


def _accept_all(intake: Intake, sends: list[Send]) -> list[Accepted | BaseException]:
    async def accept_concurrently() -> list[Accepted | BaseException]:
        accepted = asyncio.gather(*(intake.accept(send) for send in sends), return_exceptions=True)
        return await asyncio.wait_for(accepted, timeout=30)

    return asyncio.run(accept_concurrently())


def _stored(factory: sessionmaker[Session], tenant_id: uuid.UUID) -> int:
    with factory() as session:
        query = select(func.count()).select_from(Notification).where(Notification.tenant_id == tenant_id)
        return session.scalar(query) or 0


def test_concurrent_sends_are_committed_and_each_request_gets_its_own_notification(
    intake: Intake, factory: sessionmaker[Session]
) -> None:
    tenants = [_tenant(factory), _tenant(factory)]
    sends = [_send(tenants[index % 2], f"user-{index}@example.com") for index in range(40)]

    outcomes = _accept_all(intake, sends)

    assert all(isinstance(outcome, Accepted) for outcome in outcomes), outcomes
    accepted = [outcome for outcome in outcomes if isinstance(outcome, Accepted)]
    assert [item.notification.recipient for item in accepted] == [send.request.recipient for send in sends]
    assert [item.notification.tenant_id for item in accepted] == [send.tenant_id for send in sends]
    assert len({item.notification.id for item in accepted}) == 40
    assert all(item.outbox_id is not None for item in accepted)
    assert [_stored(factory, tenant) for tenant in tenants] == [20, 20]


def test_a_refused_send_fails_only_its_own_request(intake: Intake, factory: sessionmaker[Session]) -> None:
    tenant = _tenant(factory)
    # Five sends to one address with a limit of three, beside sends to others.
    sends = [_send(tenant, "busy@example.com") for _ in range(5)] + [
        _send(tenant, f"other-{index}@example.com") for index in range(5)
    ]

    outcomes = _accept_all(intake, sends)

    assert sum(isinstance(outcome, RateLimited) for outcome in outcomes[:5]) == 2
    assert all(isinstance(outcome, Accepted) for outcome in outcomes[5:])
    assert _stored(factory, tenant) == 8


def test_a_send_that_breaks_its_group_fails_alone(intake: Intake, factory: sessionmaker[Session]) -> None:
    tenant = _tenant(factory)
    # A tenant deleted after its key was verified: its insert violates the foreign key.
    sends = [
        _send(tenant, "a@example.com"),
        _send(uuid.uuid4(), "b@example.com"),
        _send(tenant, "c@example.com"),
    ]

    first, orphan, last = _accept_all(intake, sends)

    assert isinstance(first, Accepted) and isinstance(last, Accepted)
    assert isinstance(orphan, IntegrityError)
    assert _stored(factory, tenant) == 2


def test_a_send_with_an_idempotency_key_is_accepted_once(
    intake: Intake, factory: sessionmaker[Session]
) -> None:
    tenant = _tenant(factory)
    key = f"order-{uuid.uuid4().hex[:8]}"

    first, again = _accept_all(
        intake, [_send(tenant, "d@example.com", idempotency_key=key) for _ in range(2)]
    )

    assert isinstance(first, Accepted) and isinstance(again, Accepted)
    assert first.notification.id == again.notification.id
    assert sorted([first.replayed, again.replayed]) == [False, True]
    with factory() as session:
        assert (
            session.scalar(
                select(func.count()).select_from(IdempotencyRecord).where(IdempotencyRecord.key == key)
            )
            == 1
        )


def test_a_request_cancelled_while_its_send_waits_does_not_stop_the_intake(
    factory: sessionmaker[Session],
) -> None:
    tenant = _tenant(factory)
    cancelled = _send(tenant, "gone@example.com")
    cancelled.outcome.cancel()  # As asyncio does when the request's task is cancelled.
    intake = Intake(factory, publish_grace=timedelta(seconds=5), threads=1)
    try:
        [outcome] = _accept_all(intake, [cancelled, _send(tenant, "here@example.com")])[1:]
    finally:
        intake.close()

    assert isinstance(outcome, Accepted)  # Not lost behind the cancelled one.
    assert _stored(factory, tenant) == 1
