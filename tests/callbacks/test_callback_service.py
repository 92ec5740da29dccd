"""Owing status callbacks, in a private database (no scheduler or worker of the `stack` touches it):
the callback and its publish commit or roll back with the status change they report."""

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session, sessionmaker

from pulse.callbacks.service import StatusChange, owe_status_callback, status_event
from pulse.channels.webhook import webhook_payload
from pulse.db import transaction
from pulse.db.models import Notification, OutboxMessage
from pulse.delivery.providers import Claim
from pulse.delivery.retry import RetrySettings
from pulse.delivery.service import Attempt, claim_for_delivery, record_attempts
from pulse.notifications.schemas import NotificationOut, NotificationRequest
from pulse.notifications.service import accept_notification
from pulse.tenants.service import create_tenant
from pulse.vocabulary import Channel, Priority, Status

CALLBACK_URL = "https://hooks.example.com/pulse/status"
LEASE = timedelta(seconds=60)


def _parent(factory: sessionmaker[Session], *, callback_url: str | None = CALLBACK_URL) -> Notification:
    """A queued email (user, metadata, maybe a callback_url), committed."""
    request = NotificationRequest.model_validate(
        {
            "channel": "email",
            "recipient": "ada@example.com",
            "user_id": "user-7",
            "priority": "high",
            "content": {"subject": "Receipt", "body": "Thanks"},
            "metadata": {"order": "A-1001"},
            "callback_url": callback_url,
        }
    )
    with transaction(factory) as session:
        tenant = create_tenant(session, name=f"callbacks-{uuid.uuid4().hex[:8]}")
        return accept_notification(session, tenant_id=tenant.id, request=request).notification


def _change(parent: Notification, status: Status = Status.DELIVERED) -> StatusChange:
    now = datetime.now(UTC)
    return StatusChange(
        notification_id=parent.id,
        tenant_id=parent.tenant_id,
        channel=Channel(parent.channel),
        priority=Priority(parent.priority),
        recipient=parent.recipient,
        user_id=parent.user_id,
        status=status,
        changed_at=now,
        attempt_count=1,
        delivered_at=now if status is Status.DELIVERED else None,
        failed_at=now if status is Status.FAILED else None,
        last_error="SMTP 550" if status is Status.FAILED else None,
        metadata=parent.meta,
    )


def _callbacks(session: Session, parent_id: uuid.UUID) -> list[Notification]:
    return list(session.scalars(select(Notification).where(Notification.callback_for == parent_id)))


def _owed(session: Session, notification_id: uuid.UUID) -> list[OutboxMessage]:
    return list(
        session.scalars(select(OutboxMessage).where(OutboxMessage.notification_id == notification_id))
    )


def test_the_callback_and_its_publish_are_written_in_the_callers_transaction(
    factory: sessionmaker[Session],
) -> None:
    parent = _parent(factory)
    change = _change(parent)
    with factory() as session, factory() as outsider:
        session.begin()
        callback_id = owe_status_callback(session, callback_url=CALLBACK_URL, change=change)
        assert [c.id for c in _callbacks(session, parent.id)] == [callback_id]
        assert len(_owed(session, callback_id)) == 1
        assert _callbacks(outsider, parent.id) == []  # not before commit
        session.rollback()
        assert _callbacks(session, parent.id) == []
        assert _owed(session, callback_id) == []

    with transaction(factory) as session:
        callback_id = owe_status_callback(session, callback_url=CALLBACK_URL, change=change)
    with factory() as session:
        [callback] = _callbacks(session, parent.id)
        [owed] = _owed(session, callback_id)
        # An ordinary webhook notification of the parent's tenant and priority, due at once.
        assert (callback.id, callback.tenant_id, callback.channel, callback.priority) == (
            callback_id,
            parent.tenant_id,
            "webhook",
            "high",
        )
        assert (callback.recipient, callback.status, callback.callback_url) == (CALLBACK_URL, "queued", None)
        assert callback.respect_quiet_hours is False
        assert owed.routing_key == "webhook.high"
        assert owed.available_at <= datetime.now(UTC)
        assert json.loads(callback.content["body"]) == status_event(change)
        # It lists like any notification.
        listed = NotificationOut.model_validate(callback)
        assert (listed.callback_for, listed.content.subject) == (parent.id, "notification.delivered")


def test_the_event_reports_the_change_in_standard_webhooks_form() -> None:
    parent_id, changed_at = uuid.uuid4(), datetime(2026, 3, 1, 10, 30, tzinfo=UTC)
    change = StatusChange(
        notification_id=parent_id,
        tenant_id=uuid.uuid4(),
        channel=Channel.SMS,
        priority=Priority.NORMAL,
        recipient="+14155550100",
        user_id=None,
        status=Status.FAILED,
        changed_at=changed_at,
        attempt_count=4,
        delivered_at=None,
        failed_at=changed_at,
        last_error="twilio answered 400",
        metadata={},
    )
    assert status_event(change) == {
        "type": "notification.failed",
        "timestamp": "2026-03-01T10:30:00+00:00",
        "data": {
            "id": str(parent_id),
            "channel": "sms",
            "priority": "normal",
            "recipient": "+14155550100",
            "user_id": None,
            "status": "failed",
            "attempt_count": 4,
            "delivered_at": None,
            "failed_at": "2026-03-01T10:30:00+00:00",
            "read_at": None,
            "last_error": "twilio answered 400",
            "metadata": {},
        },
    }
    with pytest.raises(ValueError, match="retrying"):
        status_event(StatusChange(**{**change.__dict__, "status": Status.RETRYING}))


def _claim(factory: sessionmaker[Session], notification_id: uuid.UUID) -> Claim:
    with transaction(factory) as session:
        claims = claim_for_delivery(
            session, notification_ids=[notification_id], lease=LEASE, retries=RetrySettings()
        )
    return claims[notification_id]


def _record(
    factory: sessionmaker[Session], claim: Claim, error: str | None = None, retry_in: int | None = None
) -> datetime:
    now = datetime.now(UTC)
    attempt = Attempt(
        claim=claim, provider="smtp", started_at=now, finished_at=now, error=error, retry_in_seconds=retry_in
    )
    with transaction(factory) as session:
        record_attempts(session, [attempt])
    return now


def _events(factory: sessionmaker[Session], parent_id: uuid.UUID) -> list[dict[str, Any]]:
    with factory() as session:
        return [json.loads(callback.content["body"]) for callback in _callbacks(session, parent_id)]


def test_recording_a_delivery_owes_a_delivered_event(factory: sessionmaker[Session]) -> None:
    parent = _parent(factory)
    claim = _claim(factory, parent.id)
    assert (claim.user_id, claim.metadata) == ("user-7", {"order": "A-1001"})
    assert claim.callback_url == CALLBACK_URL
    finished_at = _record(factory, claim)

    [delivered] = _events(factory, parent.id)
    assert delivered["type"] == "notification.delivered"
    assert datetime.fromisoformat(delivered["timestamp"]) == finished_at
    assert delivered["data"] == {
        "id": str(parent.id),
        "channel": "email",
        "priority": "high",
        "recipient": "ada@example.com",
        "user_id": "user-7",
        "status": "delivered",
        "attempt_count": 1,
        "delivered_at": finished_at.isoformat(),
        "failed_at": None,
        "read_at": None,
        "last_error": None,
        "metadata": {"order": "A-1001"},
    }


def test_a_retry_owes_nothing_and_the_final_failure_owes_a_failed_event(
    factory: sessionmaker[Session],
) -> None:
    parent = _parent(factory)
    _record(factory, _claim(factory, parent.id), error="SMTP 451", retry_in=1)
    assert _events(factory, parent.id) == []

    finished_at = _record(factory, _claim(factory, parent.id), error="SMTP 550")
    [failed] = _events(factory, parent.id)
    assert failed["type"] == "notification.failed"
    assert failed["data"]["status"] == "failed"
    assert (failed["data"]["attempt_count"], failed["data"]["last_error"]) == (2, "SMTP 550")
    assert failed["data"]["failed_at"] == finished_at.isoformat()
    assert failed["data"]["delivered_at"] is None


def test_an_attempt_whose_claim_was_lost_owes_nothing(factory: sessionmaker[Session]) -> None:
    parent = _parent(factory)
    claim = _claim(factory, parent.id)
    # The lease expired and the scheduler re-queued the notification (pulse.delivery.recovery).
    with transaction(factory) as session:
        session.execute(update(Notification).where(Notification.id == parent.id).values(status=Status.QUEUED))
    _record(factory, claim)
    assert _events(factory, parent.id) == []


@pytest.fixture
def statements(factory: sessionmaker[Session]) -> Iterator[list[str]]:
    """The SQL statements run on the private database while the test runs."""
    seen: list[str] = []
    engine = factory.kw["bind"]

    def count(*args: Any) -> None:
        seen.append(args[2])

    event.listen(engine, "before_cursor_execute", count)
    yield seen
    event.remove(engine, "before_cursor_execute", count)


def test_without_a_callback_url_recording_runs_no_extra_statement(
    factory: sessionmaker[Session], statements: list[str]
) -> None:
    parent = _parent(factory, callback_url=None)
    claim = _claim(factory, parent.id)
    statements.clear()
    _record(factory, claim)
    assert [sql.split()[0] for sql in statements] == ["INSERT", "UPDATE"]  # the attempt, the status
    assert _events(factory, parent.id) == []


def test_a_callback_is_posted_as_its_stored_event(factory: sessionmaker[Session]) -> None:
    parent = _parent(factory)
    with transaction(factory) as session:
        callback_id = owe_status_callback(session, callback_url=CALLBACK_URL, change=_change(parent))
    callback = _claim(factory, callback_id)
    with factory() as session:
        [stored] = _callbacks(session, parent.id)
    assert callback.callback_for == parent.id
    assert webhook_payload(callback) == stored.content["body"]
    # An ordinary webhook keeps the notification envelope.
    ordinary = Claim(**{**callback.__dict__, "callback_for": None})
    assert json.loads(webhook_payload(ordinary))["type"] == "notification"
