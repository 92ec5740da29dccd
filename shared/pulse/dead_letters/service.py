"""Listing and replaying failed notifications. PostgreSQL is the record; a replay re-queues the
notification with a fresh attempt budget and keeps its attempt history."""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Select, select, update
from sqlalchemy.orm import Session, selectinload

from pulse.db.models import Notification
from pulse.errors import Conflict, NotFound
from pulse.outbox.service import owe_publish
from pulse.vocabulary import Channel, Status

# One bulk replay re-queues at most this many; call again for the rest.
MAX_BULK_REPLAY = 10_000


@dataclass(frozen=True)
class ReplaySelection:
    """Which failed notifications to replay; None means any."""

    tenant_id: uuid.UUID | None = None
    channel: Channel | None = None
    failed_since: datetime | None = None
    failed_before: datetime | None = None
    notification_id: uuid.UUID | None = None


def list_dead_letters(
    session: Session, *, tenant_id: uuid.UUID | None, channel: Channel | None, limit: int
) -> list[Notification]:
    """Failed notifications, most recent failure first, with their attempts."""
    query = _failed(ReplaySelection(tenant_id=tenant_id, channel=channel))
    return list(
        session.scalars(
            query.options(selectinload(Notification.attempts))
            .order_by(Notification.failed_at.desc(), Notification.id.desc())
            .limit(limit)
        )
    )


def replay(session: Session, selection: ReplaySelection) -> list[uuid.UUID]:
    """Re-queue the selected failed notifications (at most MAX_BULK_REPLAY); returns their ids."""
    chosen = _failed(selection).with_only_columns(Notification.id).limit(MAX_BULK_REPLAY)
    now = datetime.now(UTC)
    rows = session.execute(
        update(Notification)
        .where(Notification.id.in_(chosen.scalar_subquery()), Notification.status == Status.FAILED)
        .values(
            status=Status.QUEUED,
            attempts_before_replay=Notification.attempt_count,
            replay_count=Notification.replay_count + 1,
            replayed_at=now,
            failed_at=None,
            updated_at=now,
        )
        .returning(Notification.id, Notification.channel, Notification.priority)
    ).all()
    owe_publish(session, rows)
    return [row.id for row in rows]


def replay_one(session: Session, *, tenant_id: uuid.UUID | None, notification_id: uuid.UUID) -> None:
    if replay(session, ReplaySelection(tenant_id=tenant_id, notification_id=notification_id)):
        return
    query = select(Notification.status).where(Notification.id == notification_id)
    if tenant_id is not None:
        query = query.where(Notification.tenant_id == tenant_id)
    status = session.scalar(query)
    if status is None:
        raise NotFound(f"notification {notification_id} not found")
    raise Conflict(f"notification {notification_id} is {status}; only failed notifications can be replayed")


def _failed(selection: ReplaySelection) -> Select[Notification]:
    query = select(Notification).where(Notification.status == Status.FAILED)
    if selection.tenant_id is not None:
        query = query.where(Notification.tenant_id == selection.tenant_id)
    if selection.channel is not None:
        query = query.where(Notification.channel == selection.channel)
    if selection.failed_since is not None:
        query = query.where(Notification.failed_at >= selection.failed_since)
    if selection.failed_before is not None:
        query = query.where(Notification.failed_at < selection.failed_before)
    if selection.notification_id is not None:
        query = query.where(Notification.id == selection.notification_id)
    return query
