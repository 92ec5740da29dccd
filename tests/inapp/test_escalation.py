"""Escalating unread inapp notifications: the scheduler job in a private database (no `stack` service
touches it), and the `escalate` field through the gateway in-process."""

import secrets
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from devtools.stack import Infrastructure
from pulse.db import transaction
from pulse.db.models import Notification, OutboxMessage
from pulse.inapp.escalation import escalate_due
from pulse.notifications.acceptance import AcceptanceSettings
from pulse.notifications.schemas import NotificationRequest
from pulse.notifications.service import accept_notification, force_notification
from pulse.recipients.schemas import RecipientIn
from pulse.recipients.service import put_recipient
from pulse.tenants.service import create_tenant
from tests.conftest import Tenant
from tests.services.api.conftest import auth, in_process_gateway

RULES = AcceptanceSettings(quiet_hours="off")


def _tenant(factory: sessionmaker[Session], **profile: Any) -> uuid.UUID:
    """A tenant whose user `ada` has this recipient profile (none when empty)."""
    with transaction(factory) as session:
        tenant_id = create_tenant(session, name=f"escalation-{secrets.token_hex(4)}").id
        if profile:
            put_recipient(session, tenant_id=tenant_id, user_id="ada", profile=RecipientIn(**profile))
    return tenant_id


def _inapp(
    factory: sessionmaker[Session], tenant_id: uuid.UUID, *, channels: list[str], status: str = "delivered"
) -> uuid.UUID:
    """An inapp notification to `ada` escalating to `channels`, in `status`, and due to escalate now."""
    request = NotificationRequest.model_validate(
        {
            "channel": "inapp",
            "recipient": "ada",
            "content": {"body": "Your export is ready.\nOpen it in the app.", "data": {"export": 7}},
            "metadata": {"export": "7"},
            "escalate": {"after_seconds": 600, "channels": channels},
        }
    )
    with transaction(factory) as session:
        notification = accept_notification(session, tenant_id=tenant_id, request=request).notification
    assert notification.escalate_at is not None
    assert notification.escalate_at - notification.created_at == timedelta(seconds=600)
    with transaction(factory) as session:  # As the inapp worker (and time) would leave it.
        session.execute(
            update(Notification)
            .where(Notification.id == notification.id)
            .values(status=status, escalate_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    return notification.id


def _escalate(factory: sessionmaker[Session]) -> int:
    with transaction(factory) as session:
        return escalate_due(session, rules=RULES, batch_size=100)


def _escalations_of(session: Session, notification_id: uuid.UUID) -> list[Notification]:
    return list(session.scalars(select(Notification).where(Notification.escalated_from == notification_id)))


def test_an_unread_notification_escalates_once_to_the_first_channel_the_user_can_take(
    factory: sessionmaker[Session],
) -> None:
    # No push token and sms turned off: push and sms cannot take it, email can.
    tenant_id = _tenant(factory, email="ada@example.com", phone="+14155550100", preferences={"sms": False})
    inapp_id = _inapp(factory, tenant_id, channels=["push", "sms", "email"])

    assert _escalate(factory) >= 1
    assert _escalate(factory) == 0  # Decided: never again.

    with factory() as session:
        [email] = _escalations_of(session, inapp_id)
        inapp = session.get_one(Notification, inapp_id)
        owed = session.scalars(
            select(OutboxMessage.routing_key).where(OutboxMessage.notification_id == email.id)
        ).all()
    assert (email.channel, email.recipient, email.user_id, email.status) == (
        "email",
        "ada@example.com",
        "ada",
        "queued",
    )
    # The same content; an email needs a subject, so the body's first line is one.
    assert email.content == {
        "subject": "Your export is ready.",
        "body": "Your export is ready.\nOpen it in the app.",
        "data": {"export": 7},
    }
    assert (email.meta, email.priority) == ({"export": "7"}, inapp.priority)
    assert owed == ["email.normal"]
    assert inapp.escalate_at is None and inapp.status == "delivered"
    assert inapp.escalation is not None
    assert inapp.escalation["status"] == "escalated"
    assert (inapp.escalation["channel"], inapp.escalation["notification_id"]) == ("email", str(email.id))
    assert inapp.escalation["reason"].startswith("push: no recipient")
    assert "; sms: user 'ada' opted out of sms" in inapp.escalation["reason"]


def test_a_notification_read_in_time_escalates_to_nothing(factory: sessionmaker[Session]) -> None:
    tenant_id = _tenant(factory, email="ada@example.com")
    inapp_id = _inapp(factory, tenant_id, channels=["email"], status="read")
    _escalate(factory)
    with factory() as session:
        assert _escalations_of(session, inapp_id) == []
        escalation = session.get_one(Notification, inapp_id).escalation
    assert escalation is not None
    assert (escalation["status"], escalation["reason"]) == ("not_needed", "read in time")


def test_without_an_allowed_address_the_escalation_is_skipped_with_each_channels_reason(
    factory: sessionmaker[Session],
) -> None:
    tenant_id = _tenant(factory, phone="+14155550100", preferences={"sms": False})
    inapp_id = _inapp(factory, tenant_id, channels=["sms", "email"])
    no_profile = _inapp(factory, _tenant(factory), channels=["push"])
    _escalate(factory)
    with factory() as session:
        assert _escalations_of(session, inapp_id) == _escalations_of(session, no_profile) == []
        skipped = session.get_one(Notification, inapp_id).escalation
        unknown_user = session.get_one(Notification, no_profile).escalation
    assert skipped is not None and unknown_user is not None
    assert skipped["status"] == unknown_user["status"] == "skipped"
    assert skipped["reason"].startswith("sms: user 'ada' opted out of sms")
    assert "; email: no recipient" in skipped["reason"]
    assert unknown_user["reason"].startswith("push: no recipient")


def test_a_cancelled_notification_does_not_escalate(factory: sessionmaker[Session]) -> None:
    inapp_id = _inapp(
        factory, _tenant(factory, email="ada@example.com"), channels=["email"], status="cancelled"
    )
    _escalate(factory)
    with factory() as session:
        assert _escalations_of(session, inapp_id) == []
        escalation = session.get_one(Notification, inapp_id).escalation
    assert escalation is not None and escalation["status"] == "skipped"


def test_an_escalation_not_yet_due_waits(factory: sessionmaker[Session]) -> None:
    inapp_id = _inapp(factory, _tenant(factory, email="ada@example.com"), channels=["email"])
    later = datetime.now(UTC) + timedelta(minutes=5)
    with transaction(factory) as session:
        session.execute(update(Notification).where(Notification.id == inapp_id).values(escalate_at=later))
    _escalate(factory)
    with factory() as session:
        inapp = session.get_one(Notification, inapp_id)
        assert _escalations_of(session, inapp_id) == []
    assert inapp.escalate_at == later and inapp.escalation is not None
    assert inapp.escalation["status"] == "pending"


def test_a_forced_notification_escalates_after_it_is_sent_not_after_its_send_at(
    factory: sessionmaker[Session],
) -> None:
    tenant_id = _tenant(factory, email="ada@example.com")
    request = NotificationRequest.model_validate(
        {
            "channel": "inapp",
            "recipient": "ada",
            "content": {"body": "Approve invoice 42"},
            "send_at": (datetime.now(UTC) + timedelta(days=3)).isoformat(),
            "escalate": {"after_seconds": 600, "channels": ["email"]},
        }
    )
    with transaction(factory) as session:
        inapp_id = accept_notification(session, tenant_id=tenant_id, request=request).notification.id

    with transaction(factory) as session:
        forced_at = datetime.now(UTC)
        force_notification(session, tenant_id=tenant_id, id=inapp_id)

    with factory() as session:
        inapp = session.get_one(Notification, inapp_id)
    assert inapp.escalate_at is not None and inapp.escalation is not None
    assert forced_at + timedelta(seconds=600) <= inapp.escalate_at < forced_at + timedelta(seconds=660)
    assert datetime.fromisoformat(inapp.escalation["due_at"]) == inapp.escalate_at


def test_a_second_scheduler_skips_the_escalations_the_first_is_deciding(
    factory: sessionmaker[Session],
) -> None:
    inapp_id = _inapp(factory, _tenant(factory, email="ada@example.com"), channels=["email"])
    first_holds_its_rows = threading.Event()
    second_done = threading.Event()
    results: dict[str, int] = {}

    def first() -> None:
        with transaction(factory) as session:
            results["first"] = escalate_due(session, rules=RULES, batch_size=100)
            first_holds_its_rows.set()
            second_done.wait(timeout=30)  # Commits only once the second scheduler ran.

    thread = threading.Thread(target=first)
    thread.start()
    assert first_holds_its_rows.wait(timeout=30)
    results["second"] = _escalate(factory)
    second_done.set()
    thread.join(timeout=30)

    assert results["second"] == 0 and results["first"] >= 1
    with factory() as session:
        assert len(_escalations_of(session, inapp_id)) == 1


# --- the `escalate` field ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(infrastructure: Infrastructure) -> Iterator[TestClient]:
    with in_process_gateway(infrastructure) as client:
        yield client


INAPP = {"channel": "inapp", "recipient": "ada", "content": {"body": "Your export is ready"}}


@pytest.mark.parametrize(
    ("change", "location"),
    [
        ({"escalate": {"after_seconds": 9, "channels": ["email"]}}, ["body", "escalate", "after_seconds"]),
        (
            {"escalate": {"after_seconds": 604801, "channels": ["email"]}},
            ["body", "escalate", "after_seconds"],
        ),
        ({"escalate": {"after_seconds": 600, "channels": []}}, ["body", "escalate", "channels"]),
        ({"escalate": {"after_seconds": 600, "channels": ["inapp"]}}, ["body", "escalate", "channels"]),
        ({"escalate": {"after_seconds": 600, "channels": ["webhook"]}}, ["body", "escalate", "channels"]),
        ({"escalate": {"after_seconds": 600, "channels": ["fax"]}}, ["body", "escalate", "channels", 0]),
        (
            {"escalate": {"after_seconds": 600, "channels": ["email", "email"]}},
            ["body", "escalate", "channels"],
        ),
        ({"escalate": {"after_seconds": 600}}, ["body", "escalate", "channels"]),
        ({"escalate": {"after_seconds": 600, "channels": ["sms"], "x": 1}}, ["body", "escalate", "x"]),
        (
            {
                "channel": "email",
                "recipient": "ada@example.com",
                "content": {"subject": "Ready", "body": "Your export is ready"},
                "escalate": {"after_seconds": 600, "channels": ["sms"]},
            },
            ["body", "escalate"],
        ),
        ({"user_id": "bob"}, ["body", "user_id"]),
        ({"recipient": "u" * 256}, ["body", "recipient"]),
    ],
)
def test_a_bad_escalation_or_inapp_address_is_422_naming_the_field(
    client: TestClient, tenant: Tenant, change: dict[str, Any], location: list[Any]
) -> None:
    response = client.post("/v1/notifications", json={**INAPP, **change}, headers=auth(tenant))
    assert response.status_code == 422, response.text
    assert location in [error["loc"] for error in response.json()["errors"]]


def test_an_escalation_to_a_channel_not_enabled_is_refused(
    infrastructure: Infrastructure, tenant: Tenant
) -> None:
    with in_process_gateway(infrastructure, enabled_channels=["inapp", "email"]) as client:
        body = {**INAPP, "escalate": {"after_seconds": 600, "channels": ["sms"]}}
        response = client.post("/v1/notifications", json=body, headers=auth(tenant))
    assert response.status_code == 422, response.text
    assert [error["loc"] for error in response.json()["errors"]] == [["body", "escalate", "channels"]]


def test_an_inapp_send_by_user_id_alone_is_addressed_to_that_user_with_its_plan_shown(
    client: TestClient, tenant: Tenant
) -> None:
    body = {
        "channel": "inapp",
        "user_id": "ada",
        "content": {"body": "Hi"},
        "escalate": {"after_seconds": 600, "channels": ["push", "email"]},
    }
    response = client.post("/v1/notifications", json=body, headers=auth(tenant))
    assert response.status_code == 202, response.text
    sent = response.json()
    assert (sent["recipient"], sent["user_id"], sent["escalated_from"]) == ("ada", "ada", None)
    escalation = sent["escalation"]
    assert (escalation["status"], escalation["after_seconds"], escalation["channels"]) == (
        "pending",
        600,
        ["push", "email"],
    )
    due = datetime.fromisoformat(escalation["due_at"]) - datetime.fromisoformat(sent["created_at"])
    assert due == timedelta(seconds=600)
