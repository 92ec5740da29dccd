"""The outbox sweep and the recovery of expired claims, in a private database and vhost (no other
scheduler or worker touches them, so every published message can be counted)."""

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from devtools.stack import Infrastructure
from pulse.db import transaction
from pulse.db.models import DeliveryAttempt, Notification, OutboxMessage
from pulse.delivery.recovery import recover_expired_claims
from pulse.delivery.retry import RetrySettings
from pulse.messaging.celery_app import make_celery
from pulse.messaging.publisher import ConfirmedPublisher
from pulse.notifications.schemas import NotificationRequest
from pulse.notifications.service import accept_notification
from pulse.outbox.service import AfterCommitPublisher, sweep_outbox
from pulse.settings import BrokerSettings
from pulse.tenants.service import create_tenant
from tests.conftest import drain, wait_until


def _accept(factory: sessionmaker[Session], count: int, *, due_in: timedelta) -> list[uuid.UUID]:
    with transaction(factory) as session:
        tenant = create_tenant(session, name="outbox")
        request = NotificationRequest.model_validate(
            {"channel": "email", "recipient": "ada@example.com", "content": {"subject": "s", "body": "b"}}
        )
        return [
            accept_notification(
                session, tenant_id=tenant.id, request=request, publish_grace=due_in
            ).notification.id
            for _ in range(count)
        ]


def _outbox_rows(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(OutboxMessage)) or 0


def _owed_publish(factory: sessionmaker[Session], notification_id: uuid.UUID) -> tuple[int, Notification]:
    """What accepting the notification hands the after-commit publisher: its outbox row's id, itself."""
    with factory() as session:
        row = session.scalars(
            select(OutboxMessage).where(OutboxMessage.notification_id == notification_id)
        ).one()
        return row.id, session.get_one(Notification, notification_id)


def test_two_concurrent_sweeps_publish_every_due_row_exactly_once(
    factory: sessionmaker[Session], publisher: ConfirmedPublisher, private: Infrastructure
) -> None:
    ids = _accept(factory, 8, due_in=timedelta(0))
    with factory() as first, first.begin():
        # The first sweeper holds its batch locked (not committed yet) while the second one runs.
        taken_first = sweep_outbox(first, publisher, batch_size=5)
        with factory() as second, second.begin():
            taken_second = sweep_outbox(second, publisher, batch_size=5)

    assert (taken_first, taken_second) == (5, 3)
    assert sorted(drain(private.broker_url, "pulse.email.normal")) == sorted(map(str, ids))
    assert _outbox_rows(factory) == 0


def test_a_row_still_in_the_gateways_grace_period_is_left_alone(
    factory: sessionmaker[Session], publisher: ConfirmedPublisher, private: Infrastructure
) -> None:
    [notification_id] = _accept(factory, 1, due_in=timedelta(minutes=5))
    with transaction(factory) as session:
        assert sweep_outbox(session, publisher, batch_size=100) == 0
    assert _outbox_rows(factory) == 1
    assert drain(private.broker_url, "pulse.email.normal") == []

    with transaction(factory) as session:
        session.execute(update(OutboxMessage).values(available_at=datetime.now(UTC)))
    with transaction(factory) as session:
        assert sweep_outbox(session, publisher, batch_size=100) == 1
    assert drain(private.broker_url, "pulse.email.normal") == [str(notification_id)]


def test_an_expired_claim_is_requeued_with_the_lost_attempt_recorded_and_a_live_one_is_kept(
    factory: sessionmaker[Session], publisher: ConfirmedPublisher
) -> None:
    expired, live = _accept(factory, 2, due_in=timedelta(hours=1))
    now = datetime.now(UTC)
    with transaction(factory) as session:
        for notification_id, lease_end in (
            (expired, now - timedelta(seconds=1)),
            (live, now + timedelta(minutes=1)),
        ):
            session.execute(
                update(Notification)
                .where(Notification.id == notification_id)
                .values(status="sending", attempt_count=1, claimed_until=lease_end)
            )

    with transaction(factory) as session:
        assert recover_expired_claims(session, publisher, retries=RetrySettings(), batch_size=100) == 1

    with factory() as session:
        statuses = dict(
            session.execute(
                select(Notification.id, Notification.status).where(Notification.id.in_([expired, live]))
            ).all()
        )
        lost = session.scalars(
            select(DeliveryAttempt).where(DeliveryAttempt.notification_id == expired)
        ).one()
        owed = session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.notification_id == expired, OutboxMessage.available_at <= func.now())
        )
    assert statuses == {expired: "queued", live: "sending"}
    assert (lost.number, lost.outcome) == (1, "failed")
    assert "claim expired" in (lost.error or "")
    assert owed == 1


def test_the_after_commit_publisher_stands_back_when_the_broker_fails_and_leaves_the_row_to_the_sweep(
    factory: sessionmaker[Session],
) -> None:
    unreachable = make_celery("pulse-tests-down", BrokerSettings(url="amqp://guest:guest@127.0.0.1:1//"))
    publisher = AfterCommitPublisher(factory, unreachable, confirm_timeout_seconds=1)
    [notification_id] = _accept(factory, 1, due_in=timedelta(0))
    owed = _owed_publish(factory, notification_id)
    try:
        publisher.publish([owed])
        wait_until(lambda: publisher.standing_back, what="the publisher to stand back")  # /readyz says so
    finally:
        publisher.close()
    with factory() as session:
        assert (
            session.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.id == owed[0]))
            == 1
        )


def test_publishes_beyond_what_may_wait_are_left_to_the_sweep(
    factory: sessionmaker[Session], private: Infrastructure
) -> None:
    app = make_celery("pulse-tests-burst", BrokerSettings(url=private.broker_url))
    # Stopped at once: nothing is taken from what waits, so the bound is all that decides.
    publisher = AfterCommitPublisher(factory, app, confirm_timeout_seconds=5, max_waiting=2)
    publisher.close()
    ids = _accept(factory, 5, due_in=timedelta(0))
    with factory() as session:
        owed = [
            (row.id, session.get_one(Notification, row.notification_id))
            for row in session.scalars(select(OutboxMessage).where(OutboxMessage.notification_id.in_(ids)))
        ]

    for pair in owed:
        publisher.publish([pair])
    urgent = SimpleNamespace(id=uuid.uuid4(), channel="email", priority="critical")
    publisher.publish([(0, urgent)])

    # Two normal ones wait (for a publisher that has stopped), three are the sweep's; critical still queues.
    assert publisher.waiting == 3


def test_a_row_the_sweep_published_first_is_not_published_again_by_the_after_commit_publisher(
    factory: sessionmaker[Session], publisher: ConfirmedPublisher, private: Infrastructure
) -> None:
    # The after-commit publisher fell behind by the publish grace (a fan-out's thousands wait), and
    # the sweep published the row meanwhile. (Rows and messages earlier tests left are cleared.)
    with transaction(factory) as session:
        session.execute(delete(OutboxMessage))
    drain(private.broker_url, "pulse.email.normal")
    [notification_id] = _accept(factory, 1, due_in=timedelta(0))
    owed = _owed_publish(factory, notification_id)
    with transaction(factory) as session:
        assert sweep_outbox(session, publisher, batch_size=100) == 1
    app = make_celery("pulse-tests-late", BrokerSettings(url=private.broker_url))
    late = AfterCommitPublisher(factory, app, confirm_timeout_seconds=5)
    try:
        late.publish([owed])
        wait_until(lambda: late.waiting == 0, what="the publisher to take the row")
    finally:
        late.close()  # After the group being published.

    assert drain(private.broker_url, "pulse.email.normal") == [str(notification_id)]
    assert not late.standing_back
