"""A delivery through a real provider (against the in-process sandbox) is logged once, by `deliver`,
with what the provider reported."""

import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from pulse.channels.push import FcmProvider
from pulse.channels.sms import TwilioProvider
from pulse.db import transaction
from pulse.db.models import OutboxMessage
from pulse.delivery.circuit import BreakerSettings, ProviderChain
from pulse.delivery.providers import Provider
from pulse.delivery.retry import RetrySettings
from pulse.delivery.service import Outcome, deliver
from pulse.notifications.schemas import NotificationRequest
from pulse.notifications.service import accept_notification
from pulse.settings import FcmSettings, TwilioSettings
from pulse.tenants.service import create_tenant
from tests.channels.conftest import Sandbox


def _queued(factory: sessionmaker[Session], send: dict[str, Any]) -> uuid.UUID:
    """A queued notification whose publish is taken away: only this test delivers it."""
    with transaction(factory) as session:
        tenant = create_tenant(session, name=f"log-{uuid.uuid4().hex[:8]}")
        request = NotificationRequest.model_validate(send)
        notification_id = accept_notification(session, tenant_id=tenant.id, request=request).notification.id
        session.execute(delete(OutboxMessage).where(OutboxMessage.notification_id == notification_id))
    return notification_id


@pytest.mark.parametrize(
    ("make_provider", "send", "reported"),
    [
        pytest.param(
            lambda url: TwilioProvider(TwilioSettings(base_url=url)),
            {"channel": "sms", "recipient": "+14155550100", "content": {"body": "Your code is 123456"}},
            {"segments": 1, "encoding": "GSM-7"},
            id="sms",
        ),
        pytest.param(
            lambda url: FcmProvider(FcmSettings(base_url=url)),
            {"channel": "push", "recipient": "device-token-1", "content": {"subject": "Hi", "body": "Hello"}},
            {},
            id="push",
        ),
    ],
)
def test_a_delivery_is_logged_once_with_what_the_provider_reported(
    factory: sessionmaker[Session],
    sandbox: Sandbox,
    caplog: pytest.LogCaptureFixture,
    make_provider: Any,
    send: dict[str, Any],
    reported: dict[str, Any],
) -> None:
    notification_id = _queued(factory, send)
    provider: Provider = make_provider(sandbox[0])

    with ThreadPoolExecutor(2) as senders, caplog.at_level(logging.INFO):
        [result] = deliver(
            factory,
            notification_ids=[notification_id],
            channel=send["channel"],
            providers=ProviderChain([provider], BreakerSettings()),
            lease=timedelta(seconds=60),
            retries=RetrySettings(),
            senders=senders,
        )

    assert result.outcome is Outcome.DELIVERED
    lines = [
        record
        for record in caplog.records
        if getattr(record, "notification_id", None) == str(notification_id)
    ]
    assert [line.getMessage() for line in lines] == ["delivered"]
    details = lines[0].details  # type: ignore[attr-defined]
    assert details.items() >= reported.items()
    assert details.get("message_sid") or details.get("message_name")
