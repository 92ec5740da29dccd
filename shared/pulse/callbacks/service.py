"""Owing a status callback: the event becomes a webhook notification of its own.

The callback row (channel `webhook`, recipient the parent's `callback_url`, `callback_for` the
parent's id) and its outbox row are written in the transaction that changes the parent's status,
so the event exists if and only if the change committed. From there it is an ordinary webhook:
the scheduler's outbox sweep publishes it, the webhook worker signs and sends it with the usual
retries and dead-lettering, and nothing that happens to it touches the parent.

Its content keeps the shape of any notification's (so that it lists like one): `subject` is the
event type and `body` the exact JSON text that is POSTed, serialised once here so that every
attempt sends the same bytes.
"""

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from pulse.db.models import notifications_table
from pulse.outbox.service import owe_publish
from pulse.vocabulary import Channel, Priority, Status

# The status changes a callback reports.
CALLBACK_STATUSES = frozenset({Status.DELIVERED, Status.FAILED, Status.READ})

_INSERT_CALLBACK = insert(notifications_table).returning(
    notifications_table.c.id, notifications_table.c.channel, notifications_table.c.priority
)


@dataclass(frozen=True)
class StatusChange:
    """A notification as it is right after its status changed: what its callback reports."""

    notification_id: uuid.UUID
    tenant_id: uuid.UUID
    channel: Channel
    priority: Priority
    recipient: str
    user_id: str | None
    status: Status
    changed_at: datetime
    attempt_count: int
    delivered_at: datetime | None
    failed_at: datetime | None
    last_error: str | None
    metadata: dict[str, Any]
    read_at: datetime | None = None  # inapp


def status_event(change: StatusChange) -> dict[str, Any]:
    """The Standard Webhooks event for this change."""
    if change.status not in CALLBACK_STATUSES:
        raise ValueError(f"no status callback for a change to {change.status!r}")
    return {
        "type": f"notification.{change.status}",
        "timestamp": _iso(change.changed_at),
        "data": {
            "id": str(change.notification_id),
            "channel": str(change.channel),
            "priority": str(change.priority),
            "recipient": change.recipient,
            "user_id": change.user_id,
            "status": str(change.status),
            "attempt_count": change.attempt_count,
            "delivered_at": _iso(change.delivered_at),
            "failed_at": _iso(change.failed_at),
            "read_at": _iso(change.read_at),
            "last_error": change.last_error,
            "metadata": change.metadata,
        },
    }


def owe_status_callback(session: Session, *, callback_url: str, change: StatusChange) -> uuid.UUID:
    """Record, in the caller's transaction, the callback reporting `change` to `callback_url` and
    the publish it owes (due at once: the next outbox sweep sends it). Returns the callback's id,
    which is also its `webhook-id`."""
    event = status_event(change)
    callback = session.execute(
        _INSERT_CALLBACK,
        {
            "id": uuid.uuid4(),
            "tenant_id": change.tenant_id,
            "channel": Channel.WEBHOOK,
            "priority": change.priority,
            "recipient": callback_url,
            "status": Status.QUEUED,
            "content": {
                "subject": event["type"],
                "body": json.dumps(event, separators=(",", ":"), ensure_ascii=False),
            },
            "callback_for": change.notification_id,
            # An event is due now: quiet hours are for people, not for the tenant's endpoint.
            "respect_quiet_hours": False,
            "attempt_count": 0,
            "created_at": change.changed_at,
            "updated_at": change.changed_at,
        },
    ).one()
    # available_at defaults to the database's now(), the clock the sweep compares it with.
    owe_publish(session, [callback])
    callback_id: uuid.UUID = callback.id
    return callback_id


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()
