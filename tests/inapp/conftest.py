"""In-app rows as the inapp worker leaves them, and a listener to a user's realtime events."""

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from kombu import Connection, Queue
from sqlalchemy import insert
from sqlalchemy.orm import Session

from pulse.db.models import notifications_table
from pulse.inapp.events import realtime_routing_key
from pulse.inapp.tokens import EndUser
from pulse.messaging.topology import REALTIME_EXCHANGE


def inbox_row(
    session: Session,
    tenant_id: uuid.UUID,
    user_id: str,
    *,
    status: str = "delivered",
    created_at: datetime | None = None,
    callback_url: str | None = None,
    content: dict[str, Any] | None = None,
) -> uuid.UUID:
    """An inapp notification for `user_id`: delivered (in the inbox, unread) unless `status` says not."""
    created_at = created_at or datetime.now(UTC)
    notification_id = uuid.uuid4()
    session.execute(
        insert(notifications_table).values(
            id=notification_id,
            tenant_id=tenant_id,
            channel="inapp",
            priority="normal",
            recipient=user_id,
            user_id=user_id,
            status=status,
            content=content or {"subject": "Hello", "body": f"item {notification_id}", "data": {"n": 1}},
            callback_url=callback_url,
            created_at=created_at,
            updated_at=created_at,
            delivered_at=created_at if status in ("delivered", "read") else None,
            read_at=created_at if status == "read" else None,
            attempt_count=1,
        )
    )
    return notification_id


@contextmanager
def realtime_events(broker_url: str, end_user: EndUser) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """Listen to `end_user`'s realtime events as a realtime process would (a queue of its own bound with
    the user's routing key); yields a function returning the events received since the last call."""
    with Connection(broker_url, connect_timeout=30) as connection:
        channel = connection.channel()
        queue = Queue(
            f"test-realtime-{uuid.uuid4()}",
            REALTIME_EXCHANGE,
            routing_key=realtime_routing_key(end_user),
            exclusive=True,
            auto_delete=True,
        ).bind(channel)
        queue.declare()

        def received() -> list[dict[str, Any]]:
            events = []
            while (message := queue.get(no_ack=True)) is not None:
                events.append(message.payload)
            return events

        yield received
