"""Accepting notifications (pulse.notifications.service) without HTTP, each test in a transaction that is
rolled back: what is stored and owed for each request, and why one is refused."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pulse.db.models import Notification, OutboxMessage
from pulse.errors import InvalidInput, RateLimited
from pulse.notifications.schemas import NotificationRequest
from pulse.notifications.send_time import QUIET_HOURS
from pulse.notifications.service import (
    Accepted,
    BatchRefused,
    accept_notification,
    accept_notifications,
)
from pulse.rate_limits.service import RateLimit, SendLimits
from pulse.recipients.schemas import RecipientIn
from pulse.recipients.service import put_recipient
from pulse.templates.schemas import TemplateIn
from pulse.templates.service import create_template
from pulse.tenants.service import create_tenant
from pulse.timing.policy import TenantPolicy
from pulse.timing.quiet_hours import QuietHours
from pulse.vocabulary import Priority, Status

EMAIL = {"subject": "Hi", "body": "Hello"}


@pytest.fixture
def tenant_id(session: Session) -> uuid.UUID:
    return create_tenant(session, name=f"service-{uuid.uuid4().hex[:8]}").id


def _request(**fields: Any) -> NotificationRequest:
    """An email; its content given unless it names a template."""
    content = {} if "template" in fields else {"content": EMAIL}
    return NotificationRequest.model_validate({"channel": "email", **content, **fields})


def _accept_all(session: Session, tenant_id: uuid.UUID, **options: Any) -> list[Accepted]:
    """accept_notifications, every request of which must be accepted."""
    results = accept_notifications(session, tenant_id=tenant_id, **options)
    assert all(isinstance(result, Accepted) for result in results), results
    return [result for result in results if isinstance(result, Accepted)]


def _stored(session: Session, tenant_id: uuid.UUID) -> int:
    query = select(func.count()).select_from(Notification).where(Notification.tenant_id == tenant_id)
    return session.scalar(query) or 0


def _owed(session: Session, notification_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """The notifications with a publish owed in the outbox."""
    query = select(OutboxMessage.notification_id).where(OutboxMessage.notification_id.in_(notification_ids))
    return set(session.scalars(query))


def test_a_user_id_alone_is_sent_to_the_address_of_their_profile(
    session: Session, tenant_id: uuid.UUID
) -> None:
    put_recipient(
        session,
        tenant_id=tenant_id,
        user_id="ada",
        profile=RecipientIn(email="ada@example.com", phone="+14155550100"),
    )

    email, sms = _accept_all(
        session,
        tenant_id,
        requests=[
            _request(user_id="ada"),
            _request(channel="sms", user_id="ada", content={"body": "Hello"}),
        ],
    )

    assert (email.notification.recipient, sms.notification.recipient) == ("ada@example.com", "+14155550100")
    assert email.notification.user_id == "ada"


def test_a_user_id_without_an_address_for_the_channel_is_refused(
    session: Session, tenant_id: uuid.UUID
) -> None:
    put_recipient(session, tenant_id=tenant_id, user_id="ada", profile=RecipientIn(phone="+14155550100"))

    [refused] = accept_notifications(session, tenant_id=tenant_id, requests=[_request(user_id="ada")])

    assert isinstance(refused, InvalidInput)
    assert refused.location == ("body", "recipient")
    assert _stored(session, tenant_id) == 0


def test_an_opted_out_channel_refuses_all_but_critical_sends(session: Session, tenant_id: uuid.UUID) -> None:
    put_recipient(
        session,
        tenant_id=tenant_id,
        user_id="ada",
        profile=RecipientIn(phone="+14155550100", preferences={"sms": False}),
    )
    sms = {"channel": "sms", "user_id": "ada", "content": {"body": "Your code is 123456"}}

    normal, critical = accept_notifications(
        session, tenant_id=tenant_id, requests=[_request(**sms), _request(**sms, priority="critical")]
    )

    assert isinstance(normal, InvalidInput)
    assert normal.location == ("body", "user_id")
    assert "opted out of sms" in str(normal)
    assert isinstance(critical, Accepted)
    assert critical.notification.priority == Priority.CRITICAL
    assert _stored(session, tenant_id) == 1


def test_a_send_in_quiet_hours_is_scheduled_for_their_end_and_owes_no_publish(
    session: Session, tenant_id: uuid.UUID
) -> None:
    now = datetime.now(UTC)
    # An hour either side of now: quiet whatever the time of day the test runs.
    window = QuietHours(start=(now - timedelta(hours=1)).time(), end=(now + timedelta(hours=1)).time())
    policy = TenantPolicy(quiet_hours=window)

    normal, critical = _accept_all(
        session,
        tenant_id,
        requests=[
            _request(recipient="a@example.com"),
            _request(recipient="b@example.com", priority="critical"),
        ],
        policy=policy,
    )

    waiting = normal.notification
    assert waiting.status == Status.SCHEDULED
    assert waiting.deferred_reason == QUIET_HOURS
    assert waiting.scheduled_for is not None
    assert timedelta(minutes=59) < waiting.scheduled_for - now <= timedelta(hours=1)
    assert normal.outbox_id is None
    # Critical sends are not held by quiet hours.
    assert critical.notification.status == Status.QUEUED and critical.outbox_id is not None
    assert _owed(session, [waiting.id, critical.notification.id]) == {critical.notification.id}


def test_outbox_rows_are_owed_only_for_the_notifications_due_now(
    session: Session, tenant_id: uuid.UUID
) -> None:
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()

    due, scheduled = _accept_all(
        session,
        tenant_id,
        requests=[
            _request(recipient="a@example.com"),
            _request(recipient="b@example.com", send_at=later),
        ],
    )

    assert due.notification.status == Status.QUEUED and due.outbox_id is not None
    assert scheduled.notification.status == Status.SCHEDULED and scheduled.outbox_id is None
    assert _owed(session, [due.notification.id, scheduled.notification.id]) == {due.notification.id}
    assert session.get_one(OutboxMessage, due.outbox_id).routing_key == "email.normal"


def _welcome_template(session: Session, tenant_id: uuid.UUID) -> None:
    create_template(
        session,
        tenant_id=tenant_id,
        request=TemplateIn(
            name="welcome",
            channel="email",
            subject="Welcome, {{ name }}",
            body="Your plan costs {{ price|currency('EUR') }}",
            variables=["name", "price"],
        ),
    )


def test_a_template_is_rendered_in_the_locale_of_the_recipients_profile(
    session: Session, tenant_id: uuid.UUID
) -> None:
    _welcome_template(session, tenant_id)
    put_recipient(
        session,
        tenant_id=tenant_id,
        user_id="ada",
        profile=RecipientIn(email="ada@example.com", locale="fr-FR"),
    )

    [accepted] = _accept_all(
        session,
        tenant_id,
        requests=[
            NotificationRequest.model_validate(
                {
                    "channel": "email",
                    "user_id": "ada",
                    "template": "welcome",
                    "variables": {"name": "Ada", "price": 12.5},
                }
            )
        ],
    )

    content = accepted.notification.content
    assert content["subject"] == "Welcome, Ada"
    assert content["body"].startswith("Your plan costs 12,50") and content["body"].endswith("€")
    assert accepted.notification.template == "welcome"


def test_a_template_that_is_missing_or_misses_a_variable_is_refused(
    session: Session, tenant_id: uuid.UUID
) -> None:
    _welcome_template(session, tenant_id)
    send = {"channel": "email", "recipient": "a@example.com"}

    unknown, unnamed = accept_notifications(
        session,
        tenant_id=tenant_id,
        requests=[
            NotificationRequest.model_validate({**send, "template": "farewell"}),
            NotificationRequest.model_validate({**send, "template": "welcome", "variables": {"price": 1}}),
        ],
    )

    assert isinstance(unknown, InvalidInput) and unknown.location == ("body", "template")
    assert isinstance(unnamed, InvalidInput) and unnamed.location == ("body", "variables")
    assert "name" in str(unnamed)


def test_sends_over_a_rate_limit_are_refused_and_the_first_ones_granted(
    session: Session, tenant_id: uuid.UUID
) -> None:
    rate = SendLimits(per_recipient=RateLimit(limit=2, window_seconds=60), per_tenant=RateLimit(0, 60))

    results = accept_notifications(
        session,
        tenant_id=tenant_id,
        requests=[_request(recipient="busy@example.com") for _ in range(3)]
        + [_request(recipient="calm@example.com")],
        rate=rate,
    )

    assert [type(result) for result in results] == [Accepted, Accepted, RateLimited, Accepted]
    refused = results[2]
    assert isinstance(refused, RateLimited) and refused.limit == 2
    granted = results[1]
    assert isinstance(granted, Accepted) and granted.quota is not None and granted.quota.remaining == 0
    assert _stored(session, tenant_id) == 3


def test_an_all_or_nothing_batch_with_a_refusal_raises_before_writing_anything(
    session: Session, tenant_id: uuid.UUID
) -> None:
    requests = [
        _request(recipient="a@example.com"),
        _request(recipient="c@example.com", template="nowhere"),
        _request(recipient="b@example.com"),
    ]

    with pytest.raises(BatchRefused) as refused:
        accept_notifications(session, tenant_id=tenant_id, requests=requests, all_or_nothing=True)

    assert list(refused.value.errors) == [1]
    assert isinstance(refused.value.errors[1], InvalidInput)
    assert _stored(session, tenant_id) == 0


def test_a_single_send_raises_its_refusal_and_a_repeated_idempotency_key_replays_it(
    session: Session, tenant_id: uuid.UUID
) -> None:
    with pytest.raises(InvalidInput):
        accept_notification(
            session, tenant_id=tenant_id, request=_request(recipient="c@example.com", template="nowhere")
        )

    request = _request(recipient="a@example.com")
    first = accept_notification(session, tenant_id=tenant_id, request=request, idempotency_key="order-42")
    again = accept_notification(session, tenant_id=tenant_id, request=request, idempotency_key="order-42")

    assert (first.replayed, again.replayed) == (False, True)
    assert again.notification.id == first.notification.id
    assert again.outbox_id is None  # Its publish was owed once, by the first.
    assert _stored(session, tenant_id) == 1
