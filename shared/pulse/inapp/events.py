"""Realtime events: how the in-app worker and the gateway tell the realtime processes that a user has a
new notification or read some, whichever process holds that user's connections.

Events go to the direct exchange `pulse.realtime` with the user's routing key; each realtime process
binds its own queue with the key of every user connected to it. They are JSON objects:

    {"type": "notification", "tenant_id": "…", "user_id": "…", "notification": <InboxItem>}
    {"type": "read", "tenant_id": "…", "user_id": "…", "ids": ["…", …]}

They are transient and unconfirmed: the inbox in PostgreSQL is the durable copy (a client that missed
an event gets the item with its `missed_notifications` on the next connect). So a failed publish is
logged and counted, never raised.
"""

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

from kombu import Connection, Producer
from kombu.entity import TRANSIENT_DELIVERY_MODE

from pulse.inapp.inbox import InboxItem
from pulse.inapp.tokens import EndUser
from pulse.messaging.topology import REALTIME_EXCHANGE
from pulse.observability import metrics
from pulse.settings import BrokerSettings

log = logging.getLogger(__name__)

NOTIFICATION_EVENT = "notification"
READ_EVENT = "read"


def realtime_routing_key(end_user: EndUser) -> str:
    """`<tenant id>.<sha256 of the user id>`: at most 101 bytes (AMQP allows 255) whatever the user id."""
    return f"{end_user.tenant_id}.{hashlib.sha256(end_user.user_id.encode()).hexdigest()}"


def notification_event(end_user: EndUser, item: InboxItem) -> dict[str, Any]:
    return {**_addressed(NOTIFICATION_EVENT, end_user), "notification": item.model_dump(mode="json")}


def read_event(end_user: EndUser, ids: Iterable[uuid.UUID]) -> dict[str, Any]:
    return {**_addressed(READ_EVENT, end_user), "ids": [str(id) for id in ids]}


def _addressed(event_type: str, end_user: EndUser) -> dict[str, Any]:
    return {"type": event_type, "tenant_id": str(end_user.tenant_id), "user_id": end_user.user_id}


class RealtimePublisher:
    """Publishes events to `pulse.realtime` on one kept-open connection (re-opened once when found
    broken). Thread-safe: publishes take turns. After a failed publish it stands back for
    `backoff_seconds` (those events are dropped at once), so that a broker outage does not make every
    read request or delivered batch wait for a connection attempt."""

    def __init__(self, broker: BrokerSettings, *, backoff_seconds: float = 5.0) -> None:
        # No heartbeats: nothing would send them while the publisher idles; a dead connection shows
        # as an error on the next publish, which then reconnects.
        self._connection = Connection(broker.url, connect_timeout=broker.connect_timeout_seconds, heartbeat=0)
        self._producer: Producer | None = None
        self._lock = threading.Lock()
        self._backoff_seconds = backoff_seconds
        self._standing_back_until = 0.0

    def publish(self, end_user: EndUser, event: dict[str, Any]) -> bool:
        """True once the event was handed to RabbitMQ; False (logged, counted) when it could not be."""
        if time.monotonic() < self._standing_back_until:
            metrics.REALTIME_EVENTS.labels(event.get("type"), "failed").inc()
            return False
        try:
            with self._lock:
                if self._producer is None:
                    self._producer = Producer(self._connection, auto_declare=False)
                self._producer.publish(
                    event,
                    exchange=REALTIME_EXCHANGE,
                    routing_key=realtime_routing_key(end_user),
                    serializer="json",
                    delivery_mode=TRANSIENT_DELIVERY_MODE,
                    declare=[],  # `pulse-admin init` declared the exchange.
                    retry=True,
                    retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2},
                )
        except Exception as error:  # noqa: BLE001 - whatever broke, the inbox keeps the event's subject.
            log.warning(
                "could not publish a realtime %s event (standing back %ss): %r",
                event.get("type"),
                self._backoff_seconds,
                error,
            )
            self._standing_back_until = time.monotonic() + self._backoff_seconds
            metrics.REALTIME_EVENTS.labels(event.get("type"), "failed").inc()
            return False
        metrics.REALTIME_EVENTS.labels(event.get("type"), "published").inc()
        return True

    def close(self) -> None:
        with self._lock:
            self._connection.release()
            self._producer = None
