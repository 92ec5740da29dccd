"""The inbox over the inapp notification rows, in a private database (no worker of the `stack` touches
it): what it lists, pagination, reading one or all, and the read callbacks owed with them."""

import json
import secrets
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pulse.db import transaction
from pulse.db.models import Notification, OutboxMessage
from pulse.inapp.inbox import (
    InboxStatus,
    inbox_page,
    mark_all_read,
    mark_read,
    unread_count,
    unread_items,
)
from pulse.inapp.tokens import EndUser
from pulse.tenants.service import create_tenant
from tests.inapp.conftest import inbox_row

CALLBACK_URL = "https://hooks.example.com/pulse/status"


def _user(factory: sessionmaker[Session], user_id: str = "ada") -> EndUser:
    with transaction(factory) as session:
        tenant = create_tenant(session, name=f"inbox-{secrets.token_hex(4)}")
    return EndUser(tenant_id=tenant.id, user_id=user_id)


def test_the_inbox_holds_the_users_delivered_and_read_inapp_items_newest_first(
    factory: sessionmaker[Session],
) -> None:
    ada = _user(factory)
    base = datetime.now(UTC) - timedelta(hours=1)
    with transaction(factory) as session:
        old = inbox_row(session, ada.tenant_id, ada.user_id, created_at=base)
        read = inbox_row(
            session, ada.tenant_id, ada.user_id, status="read", created_at=base + timedelta(minutes=1)
        )
        new = inbox_row(session, ada.tenant_id, ada.user_id, created_at=base + timedelta(minutes=2))
        # Not in the inbox (yet): still queued; and someone else's items.
        inbox_row(session, ada.tenant_id, ada.user_id, status="queued")
        inbox_row(session, ada.tenant_id, "bob")
        inbox_row(session, _user(factory).tenant_id, ada.user_id)

    with factory() as session:
        everything, _ = inbox_page(session, ada, status=InboxStatus.ALL, limit=10)
        assert [item.id for item in everything] == [new, read, old]
        assert [item.id for item in unread_items(session, ada)] == [new, old]
        only_read, _ = inbox_page(session, ada, status=InboxStatus.READ, limit=10)
        assert [item.id for item in only_read] == [read]
        assert unread_count(session, ada) == 2
    first = everything[-1]
    assert (first.subject, first.data, first.priority, first.status, first.read_at) == (
        "Hello",
        {"n": 1},
        "normal",
        "delivered",
        None,
    )
    assert first.model_dump(mode="json")["id"] == str(old)


def test_pages_follow_the_cursor_without_gaps_or_repeats(factory: sessionmaker[Session]) -> None:
    ada = _user(factory)
    same_instant = datetime.now(UTC)
    with transaction(factory) as session:
        ids = {inbox_row(session, ada.tenant_id, ada.user_id, created_at=same_instant) for _ in range(5)}

    seen: list[uuid.UUID] = []
    cursor = None
    with factory() as session:
        for _ in range(3):
            page, cursor = inbox_page(session, ada, status=InboxStatus.UNREAD, limit=2, cursor=cursor)
            seen += [item.id for item in page]
            if cursor is None:
                break
    assert len(seen) == 5 and set(seen) == ids
    assert cursor is None


def test_reading_an_item_sets_read_at_once_and_owes_its_read_callback(factory: sessionmaker[Session]) -> None:
    ada = _user(factory)
    with transaction(factory) as session:
        item_id = inbox_row(session, ada.tenant_id, ada.user_id, callback_url=CALLBACK_URL)

    with transaction(factory) as session:
        read = mark_read(session, ada, item_id)
    assert read is not None and read.status == "read" and read.read_at is not None
    with transaction(factory) as session:
        again = mark_read(session, ada, item_id)
    assert again == read  # Idempotent: same read_at, no second callback.

    with factory() as session:
        stored = session.get_one(Notification, item_id)
        [callback] = session.scalars(select(Notification).where(Notification.callback_for == item_id)).all()
        owed = session.scalars(
            select(OutboxMessage.routing_key).where(OutboxMessage.notification_id == callback.id)
        ).all()
    assert (stored.status, stored.read_at) == ("read", read.read_at)
    event = json.loads(callback.content["body"])
    assert event["type"] == "notification.read"
    assert event["data"]["read_at"] == read.read_at.isoformat()
    assert (event["data"]["id"], event["data"]["status"]) == (str(item_id), "read")
    assert (callback.recipient, owed) == (CALLBACK_URL, ["webhook.normal"])


def test_another_users_item_or_one_not_yet_delivered_cannot_be_read(factory: sessionmaker[Session]) -> None:
    ada = _user(factory)
    with transaction(factory) as session:
        bobs = inbox_row(session, ada.tenant_id, "bob")
        queued = inbox_row(session, ada.tenant_id, ada.user_id, status="queued")
        other_tenants = inbox_row(session, _user(factory).tenant_id, ada.user_id)
    with transaction(factory) as session:
        for item_id in (bobs, queued, other_tenants, uuid.uuid4()):
            assert mark_read(session, ada, item_id) is None
    with factory() as session:
        statuses = session.scalars(
            select(Notification.status).where(Notification.id.in_([bobs, queued, other_tenants]))
        ).all()
    assert sorted(statuses) == ["delivered", "delivered", "queued"]


def test_read_all_marks_every_unread_item_of_the_user_only(factory: sessionmaker[Session]) -> None:
    ada = _user(factory)
    with transaction(factory) as session:
        unread = {inbox_row(session, ada.tenant_id, ada.user_id) for _ in range(3)}
        inbox_row(session, ada.tenant_id, ada.user_id, status="read")
        bobs = inbox_row(session, ada.tenant_id, "bob")

    with transaction(factory) as session:
        assert set(mark_all_read(session, ada)) == unread
    with transaction(factory) as session:
        assert mark_all_read(session, ada) == []
    with factory() as session:
        assert unread_count(session, ada) == 0
        assert unread_count(session, EndUser(ada.tenant_id, "bob")) == 1
        assert session.get_one(Notification, bobs).status == "delivered"
