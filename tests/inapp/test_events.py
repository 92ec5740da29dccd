"""Realtime events: routing keys, event bodies, and publishing them to a private broker (or to none)."""

import uuid
from datetime import UTC, datetime
from typing import Any

from prometheus_client import REGISTRY

from devtools.stack import Infrastructure
from pulse.inapp.events import RealtimePublisher, notification_event, read_event, realtime_routing_key
from pulse.inapp.inbox import InboxItem
from pulse.inapp.tokens import EndUser
from pulse.settings import BrokerSettings
from tests.conftest import wait_until
from tests.inapp.conftest import realtime_events

ADA = EndUser(tenant_id=uuid.uuid4(), user_id="ada")
ITEM = InboxItem(
    id=uuid.uuid4(),
    subject="Export ready",
    body="Your export is ready",
    data={"export": 7},
    priority="normal",
    status="delivered",
    created_at=datetime(2026, 3, 1, 10, 30, tzinfo=UTC),
    read_at=None,
)


def test_routing_keys_are_per_tenant_and_user_and_short_whatever_the_user_id() -> None:
    longest = EndUser(ADA.tenant_id, "é" * 255)  # 510 bytes in UTF-8: too long for a routing key itself.
    keys = {realtime_routing_key(user) for user in (ADA, longest, EndUser(uuid.uuid4(), "ada"))}
    assert len(keys) == 3
    assert all(len(key.encode()) <= 255 and key.split(".")[0] in key for key in keys)
    assert realtime_routing_key(ADA).startswith(f"{ADA.tenant_id}.")


def test_a_published_event_reaches_a_queue_bound_for_its_user_only(private: Infrastructure) -> None:
    publisher = RealtimePublisher(BrokerSettings(url=private.broker_url))
    bob = EndUser(ADA.tenant_id, "bob")
    try:
        with (
            realtime_events(private.broker_url, ADA) as adas,
            realtime_events(private.broker_url, bob) as bobs,
        ):
            assert publisher.publish(ADA, notification_event(ADA, ITEM))
            assert publisher.publish(ADA, read_event(ADA, [ITEM.id]))
            events: list[dict[str, Any]] = []
            wait_until(lambda: events.extend(adas()) or len(events) == 2, what="ada's two events")
            assert bobs() == []
    finally:
        publisher.close()
    assert events == [
        {
            "type": "notification",
            "tenant_id": str(ADA.tenant_id),
            "user_id": "ada",
            "notification": {
                "id": str(ITEM.id),
                "subject": "Export ready",
                "body": "Your export is ready",
                "data": {"export": 7},
                "priority": "normal",
                "status": "delivered",
                "created_at": "2026-03-01T10:30:00Z",
                "read_at": None,
            },
        },
        {"type": "read", "tenant_id": str(ADA.tenant_id), "user_id": "ada", "ids": [str(ITEM.id)]},
    ]


def test_without_a_broker_a_publish_fails_quietly_and_is_counted() -> None:
    def failed() -> float:
        return (
            REGISTRY.get_sample_value("pulse_realtime_events_total", {"type": "read", "outcome": "failed"})
            or 0
        )

    before = failed()
    publisher = RealtimePublisher(
        BrokerSettings(url="amqp://guest:guest@127.0.0.1:1//", connect_timeout_seconds=1)
    )
    try:
        assert publisher.publish(ADA, read_event(ADA, [ITEM.id])) is False
        assert publisher.publish(ADA, read_event(ADA, [ITEM.id])) is False  # Standing back.
    finally:
        publisher.close()
    assert failed() == before + 2
