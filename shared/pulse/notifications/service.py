"""Accepting, reading and listing notifications. Callers own the transaction (commit at the edge)."""

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session, selectinload

from pulse.db.models import IdempotencyRecord, Notification, notifications_table, outbox_table
from pulse.errors import Conflict, NotFound
from pulse.messaging.topology import routing_key
from pulse.notifications.schemas import NotificationRequest
from pulse.pagination import after_cursor, encode_cursor
from pulse.scheduling.service import NO_QUIET_HOURS_UTC, TenantPolicy, plan_send_time
from pulse.vocabulary import Channel, Priority, Status

IDEMPOTENCY_TTL = timedelta(hours=24)

# Acceptance is the gateway's hottest path: plain Core inserts (no unit of work), built once so
# that SQLAlchemy reuses their compiled form; the values arrive as parameters.
_INSERT_NOTIFICATION = insert(notifications_table)
_INSERT_OUTBOX = insert(outbox_table).returning(outbox_table.c.id)


@dataclass(frozen=True)
class Accepted:
    notification: Notification
    # The outbox row to publish after commit; None when the notification waits for the scheduler.
    outbox_id: int | None = None
    # True when an idempotent repeat returned the original notification.
    replayed: bool = False


@dataclass(frozen=True)
class ListFilters:
    status: Status | None = None
    channel: Channel | None = None
    user_id: str | None = None
    priority: Priority | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


def request_fingerprint(request: NotificationRequest) -> str:
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def accept_notification(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    request: NotificationRequest,
    idempotency_key: str | None = None,
    policy: TenantPolicy = NO_QUIET_HOURS_UTC,
    schedule_id: uuid.UUID | None = None,
    publish_grace: timedelta = timedelta(seconds=5),
) -> Accepted:
    """Store the notification, in the caller's transaction, with the publish it owes when it is due
    now; a later one (`send_at`, quiet hours) is `scheduled` and released by the scheduler."""
    notification_id = uuid.uuid4()
    if idempotency_key is not None:
        original = _claim_idempotency_key(
            session,
            tenant_id=tenant_id,
            key=idempotency_key,
            fingerprint=request_fingerprint(request),
            notification_id=notification_id,
        )
        if original is not None:
            return Accepted(
                notification=get_notification(session, tenant_id=tenant_id, id=original), replayed=True
            )

    now = datetime.now(UTC)
    timing = plan_send_time(request, policy=policy, now=now)
    values: dict[str, Any] = {
        "id": notification_id,
        "tenant_id": tenant_id,
        "channel": request.channel,
        "priority": request.priority,
        "recipient": request.recipient,
        "user_id": request.user_id,
        "status": Status.QUEUED if timing.scheduled_for is None else Status.SCHEDULED,
        "content": request.content.model_dump(exclude_none=True),
        "metadata": request.metadata,
        "created_at": now,
        "updated_at": now,
        "attempt_count": 0,
        "scheduled_for": timing.scheduled_for,
        "timezone": timing.timezone,
        "deferred_reason": timing.deferred_reason,
        "respect_quiet_hours": request.respect_quiet_hours,
        "schedule_id": schedule_id,
        "callback_url": request.callback_url,
    }
    session.execute(_INSERT_NOTIFICATION, values)
    # The row as inserted, for the response; "metadata" is `meta` on the mapped class.
    attributes = {name: value for name, value in values.items() if name != "metadata"}
    notification = Notification(**attributes, meta=request.metadata, attempts=[])
    if timing.scheduled_for is not None:
        return Accepted(notification=notification)
    outbox_id = session.scalar(
        _INSERT_OUTBOX,
        {
            "notification_id": notification_id,
            "routing_key": routing_key(request.channel, request.priority),
            "available_at": now + publish_grace,
        },
    )
    assert outbox_id is not None
    return Accepted(notification=notification, outbox_id=outbox_id)


def _claim_idempotency_key(
    session: Session, *, tenant_id: uuid.UUID, key: str, fingerprint: str, notification_id: uuid.UUID
) -> uuid.UUID | None:
    """Reserve the key for this request; return the original notification's id if it was already used.

    A concurrent request with the same key blocks on the primary key until the first one commits, so
    two racing requests create one notification.
    """
    now = datetime.now(UTC)
    values = {
        "tenant_id": tenant_id,
        "key": key,
        "request_hash": fingerprint,
        "notification_id": notification_id,
        "expires_at": now + IDEMPOTENCY_TTL,
    }
    statement = pg_insert(IdempotencyRecord).values(values)
    reserved = session.scalar(
        statement.on_conflict_do_update(
            index_elements=[IdempotencyRecord.tenant_id, IdempotencyRecord.key],
            set_={
                name: statement.excluded[name] for name in ("request_hash", "notification_id", "expires_at")
            },
            where=IdempotencyRecord.expires_at <= now,
        ).returning(IdempotencyRecord.key)
    )
    if reserved is not None:
        return None
    record = session.get_one(IdempotencyRecord, (tenant_id, key))
    if record.request_hash != fingerprint:
        raise Conflict("this Idempotency-Key was already used with a different request body")
    return record.notification_id


def get_notification(session: Session, *, tenant_id: uuid.UUID, id: uuid.UUID) -> Notification:
    notification = session.scalars(
        select(Notification)
        .options(selectinload(Notification.attempts))
        .where(Notification.id == id, Notification.tenant_id == tenant_id)
    ).one_or_none()
    if notification is None:
        raise NotFound(f"notification {id} not found")
    return notification


def list_notifications(
    session: Session, *, tenant_id: uuid.UUID, filters: ListFilters, limit: int, cursor: str | None
) -> tuple[list[Notification], str | None]:
    """Newest first, keyset-paginated on (created_at, id) so pages stay stable while rows arrive."""
    query = select(Notification).where(Notification.tenant_id == tenant_id)
    for column, value in (
        (Notification.status, filters.status),
        (Notification.channel, filters.channel),
        (Notification.user_id, filters.user_id),
        (Notification.priority, filters.priority),
    ):
        if value is not None:
            query = query.where(column == value)
    if filters.created_after is not None:
        query = query.where(Notification.created_at >= filters.created_after)
    if filters.created_before is not None:
        query = query.where(Notification.created_at < filters.created_before)
    if cursor is not None:
        query = query.where(after_cursor(cursor, Notification.created_at, Notification.id))
    rows = list(
        session.scalars(
            query.order_by(Notification.created_at.desc(), Notification.id.desc()).limit(limit + 1)
        )
    )
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].created_at, rows[-1].id)


def cancel_notification(session: Session, *, tenant_id: uuid.UUID, id: uuid.UUID) -> Notification:
    """Cancel a notification not yet handed to a provider (`scheduled`, or `queued` and unclaimed).
    A worker that receives its message later finds it cancelled and drops it."""
    cancelled = session.execute(
        update(Notification)
        .where(
            Notification.id == id,
            Notification.tenant_id == tenant_id,
            Notification.status.in_([Status.SCHEDULED, Status.QUEUED]),
        )
        .values(status=Status.CANCELLED, updated_at=datetime.now(UTC))
        .returning(Notification.id)
    ).one_or_none()
    notification = get_notification(session, tenant_id=tenant_id, id=id)
    if cancelled is None:
        raise Conflict(
            f"notification {id} is {notification.status}; only scheduled or queued ones can be cancelled"
        )
    return notification


def force_notification(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    id: uuid.UUID,
    publish_grace: timedelta = timedelta(seconds=5),
) -> Accepted:
    """Send now a notification that waits (`scheduled` for send_at or quiet hours, or `retrying`)."""
    now = datetime.now(UTC)
    forced = session.execute(
        update(Notification)
        .where(
            Notification.id == id,
            Notification.tenant_id == tenant_id,
            Notification.status.in_([Status.SCHEDULED, Status.RETRYING]),
        )
        .values(
            status=Status.QUEUED,
            scheduled_for=None,
            deferred_reason=None,
            next_attempt_at=None,
            updated_at=now,
        )
        .returning(Notification.channel, Notification.priority)
    ).one_or_none()
    if forced is None:
        status = get_notification(session, tenant_id=tenant_id, id=id).status
        raise Conflict(f"notification {id} is {status}; only scheduled or retrying ones can be forced")
    outbox_id = session.scalar(
        _INSERT_OUTBOX,
        {
            "notification_id": id,
            "routing_key": routing_key(Channel(forced.channel), Priority(forced.priority)),
            "available_at": now + publish_grace,
        },
    )
    return Accepted(notification=get_notification(session, tenant_id=tenant_id, id=id), outbox_id=outbox_id)
