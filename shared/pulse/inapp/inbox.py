"""A user's inbox: their in-app notifications, read straight from the notification rows (no copy).

An inapp notification enters the inbox when it is `delivered` (unread) and stays there once `read`;
one still queued, scheduled or being sent is not in it yet. Reading one sets `read_at`, makes it
`read` and owes its `notification.read` status callback, all in the caller's transaction.
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, Row, func, select, update
from sqlalchemy.orm import Session

from pulse.callbacks.service import StatusChange, owe_status_callback
from pulse.db.models import notifications_table as _notification
from pulse.inapp.tokens import EndUser
from pulse.pagination import after_cursor, encode_cursor
from pulse.vocabulary import Channel, Priority, Status

_AnyRow = Row[*tuple[Any, ...]]

# Read-all marks at most this many per call (the oldest unread ones wait for the next call), so one
# request's transaction, callbacks and realtime event stay bounded.
MAX_READ_ALL = 10_000


class InboxStatus(StrEnum):
    UNREAD = "unread"
    READ = "read"
    ALL = "all"


_STATUSES = {
    InboxStatus.UNREAD: [Status.DELIVERED],
    InboxStatus.READ: [Status.READ],
    InboxStatus.ALL: [Status.DELIVERED, Status.READ],
}


class InboxItem(BaseModel):
    """An in-app notification as its user sees it."""

    id: uuid.UUID
    subject: str | None = Field(description="The notification's subject, if it has one.")
    body: str
    data: dict[str, Any] | None = Field(description="The structured payload given with the content.")
    priority: Priority
    status: Status = Field(description="`delivered` (unread) or `read`.")
    created_at: datetime
    read_at: datetime | None = Field(description="When the user read it; null while unread.")


_ITEM_COLUMNS = (
    _notification.c.id,
    _notification.c.content,
    _notification.c.priority,
    _notification.c.status,
    _notification.c.created_at,
    _notification.c.read_at,
)
# What a status callback reports besides the item itself.
_CALLBACK_COLUMNS = (
    _notification.c.tenant_id,
    _notification.c.channel,
    _notification.c.recipient,
    _notification.c.user_id,
    _notification.c.attempt_count,
    _notification.c.delivered_at,
    _notification.c.failed_at,
    _notification.c.last_error,
    _notification.c["metadata"],
    _notification.c.callback_url,
)


def _of(end_user: EndUser) -> ColumnElement[bool]:
    """This user's inapp notifications (an inapp notification's recipient is its user id)."""
    return (
        (_notification.c.tenant_id == end_user.tenant_id)
        & (_notification.c.channel == Channel.INAPP)
        & (_notification.c.recipient == end_user.user_id)
    )


def _item(row: _AnyRow) -> InboxItem:
    content = row.content
    return InboxItem(
        id=row.id,
        subject=content.get("subject"),
        body=content["body"],
        data=content.get("data"),
        priority=row.priority,
        status=row.status,
        created_at=row.created_at,
        read_at=row.read_at,
    )


def inbox_page(
    session: Session, end_user: EndUser, *, status: InboxStatus, limit: int, cursor: str | None = None
) -> tuple[list[InboxItem], str | None]:
    """Newest first, keyset-paginated like every list; returns the page and the next page's cursor."""
    query = select(*_ITEM_COLUMNS).where(_of(end_user), _notification.c.status.in_(_STATUSES[status]))
    if cursor is not None:
        query = query.where(after_cursor(cursor, _notification.c.created_at, _notification.c.id))
    rows = session.execute(
        query.order_by(_notification.c.created_at.desc(), _notification.c.id.desc()).limit(limit + 1)
    ).all()
    items = [_item(row) for row in rows[:limit]]
    next_cursor = encode_cursor(items[-1].created_at, items[-1].id) if len(rows) > limit else None
    return items, next_cursor


def unread_items(session: Session, end_user: EndUser, limit: int = 100) -> list[InboxItem]:
    """The user's unread items, newest first (what a client missed while away)."""
    items, _ = inbox_page(session, end_user, status=InboxStatus.UNREAD, limit=limit)
    return items


def unread_count(session: Session, end_user: EndUser) -> int:
    count = session.scalar(
        select(func.count()).where(_of(end_user), _notification.c.status == Status.DELIVERED)
    )
    return count or 0


def delivered_items(session: Session, ids: Sequence[uuid.UUID]) -> list[tuple[EndUser, InboxItem]]:
    """Those of the inapp notifications `ids` that are in their user's inbox and unread, with their user."""
    rows = session.execute(
        select(*_ITEM_COLUMNS, _notification.c.tenant_id, _notification.c.recipient).where(
            _notification.c.id.in_(ids),
            _notification.c.channel == Channel.INAPP,
            _notification.c.status == Status.DELIVERED,
        )
    ).all()
    return [(EndUser(tenant_id=row.tenant_id, user_id=row.recipient), _item(row)) for row in rows]


def mark_read(session: Session, end_user: EndUser, notification_id: uuid.UUID) -> InboxItem | None:
    """Mark one of the user's items read, in the caller's transaction; None when the user has no such
    item (another user's, not inapp, not delivered yet). An item already read is returned as it is."""
    read = _mark_read(session, end_user, _notification.c.id == notification_id)
    if read:
        return read[0]
    row = session.execute(
        select(*_ITEM_COLUMNS).where(
            _of(end_user), _notification.c.id == notification_id, _notification.c.status == Status.READ
        )
    ).one_or_none()
    return None if row is None else _item(row)


def mark_all_read(session: Session, end_user: EndUser) -> list[uuid.UUID]:
    """Mark the user's unread items read (at most MAX_READ_ALL, the newest first), in the caller's
    transaction; returns their ids."""
    newest_unread = (
        select(_notification.c.id)
        .where(_of(end_user), _notification.c.status == Status.DELIVERED)
        .order_by(_notification.c.created_at.desc())
        .limit(MAX_READ_ALL)
        # A row another request is marking right now is left to it.
        .with_for_update(skip_locked=True)
    )
    return [item.id for item in _mark_read(session, end_user, _notification.c.id.in_(newest_unread))]


def _mark_read(session: Session, end_user: EndUser, which: ColumnElement[bool]) -> Sequence[InboxItem]:
    """Make the chosen unread items `read`, owing the status callback of each that has a callback URL."""
    now = datetime.now(UTC)
    rows = session.execute(
        update(_notification)
        .where(_of(end_user), _notification.c.status == Status.DELIVERED, which)
        .values(status=Status.READ, read_at=now, updated_at=now)
        .returning(*_ITEM_COLUMNS, *_CALLBACK_COLUMNS)
    ).all()
    for row in rows:
        if row.callback_url is not None:
            owe_status_callback(session, callback_url=row.callback_url, change=_read(row, now))
    return [_item(row) for row in rows]


def _read(row: _AnyRow, read_at: datetime) -> StatusChange:
    return StatusChange(
        notification_id=row.id,
        tenant_id=row.tenant_id,
        channel=Channel(row.channel),
        priority=Priority(row.priority),
        recipient=row.recipient,
        user_id=row.user_id,
        status=Status.READ,
        changed_at=read_at,
        attempt_count=row.attempt_count,
        delivered_at=row.delivered_at,
        failed_at=row.failed_at,
        last_error=row.last_error,
        metadata=row.metadata,
        read_at=read_at,
    )
