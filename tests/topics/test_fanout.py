"""Fan-outs of topic sends, run chunk by chunk as the scheduler's runner does, in a private database
(no scheduler of the session's stack takes part)."""

import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from devtools.stack import wait_until
from pulse.db import transaction
from pulse.db.models import (
    Fanout,
    FanoutPart,
    Notification,
    OutboxMessage,
    RateLimitCounter,
    Recipient,
    Tenant,
    TopicSubscription,
)
from pulse.errors import Conflict
from pulse.notifications.acceptance import AcceptanceSettings
from pulse.notifications.schemas import NotificationRequest
from pulse.notifications.service import Accepted, accept_notification
from pulse.tenants.service import create_tenant
from pulse.topics.fanout import finish_fanouts, run_fanout_chunk
from pulse.topics.service import SUBSCRIBERS_PER_PART, cancel_fanout, get_fanout, start_fanout, subscribe

# The deployment's rules, spelled out so that no PULSE_* variable of the environment plays a part.
RULES = AcceptanceSettings(
    enabled_channels=["email", "sms"],
    quiet_hours="off",
    webhook_allowlist="",
    rate_limit=0,
    rate_limit_window_seconds=60,
    tenant_sends_per_minute=0,
)
CHUNK = 1000
NEWS = {"channel": "email", "topic": "news", "content": {"subject": "News", "body": "Hello"}}


@pytest.fixture(autouse=True)
def _empty(factory: sessionmaker[Session]) -> None:
    """Every test counts the notifications and fan-outs it finds."""
    with transaction(factory) as session:
        for table in (Notification, Fanout, TopicSubscription, Recipient, RateLimitCounter):
            session.execute(delete(table))


@pytest.fixture
def tenant_id(factory: sessionmaker[Session]) -> uuid.UUID:
    with transaction(factory) as session:
        return create_tenant(session, name=f"topics-{uuid.uuid4().hex[:8]}").id


def _users(count: int) -> list[str]:
    return [f"u-{index:05}" for index in range(count)]


def _topic(factory: sessionmaker[Session], tenant_id: uuid.UUID, profiles: dict[str, dict[str, Any]]) -> None:
    """Subscribe the users to `news` (in calls of 1000, as the API takes them), with these profiles
    (a user mapped to None has none)."""
    users = list(profiles)
    with transaction(factory) as session:
        for start in range(0, len(users), 1000):
            subscribe(session, tenant_id=tenant_id, topic="news", user_ids=users[start : start + 1000])
        rows = [
            {"tenant_id": tenant_id, "user_id": user, **p} for user, p in profiles.items() if p is not None
        ]
        if rows:
            session.execute(insert(Recipient), rows)


def _email_profiles(count: int) -> dict[str, dict[str, Any]]:
    return {user: {"email": f"{user}@example.com"} for user in _users(count)}


def _start(factory: sessionmaker[Session], tenant_id: uuid.UUID) -> uuid.UUID:
    with transaction(factory) as session:
        return start_fanout(session, tenant_id=tenant_id, request=NotificationRequest.model_validate(NEWS)).id


def _chunk_in(session: Session) -> list[Accepted] | None:
    return run_fanout_chunk(session, rules=RULES, chunk_size=CHUNK, publish_grace=timedelta(seconds=5))


def _chunk(factory: sessionmaker[Session]) -> list[Accepted] | None:
    """One chunk, as a runner takes it (services/scheduler/fanouts.py)."""
    with transaction(factory) as session:
        accepted = _chunk_in(session)
    if accepted == []:
        with transaction(factory) as session:
            finish_fanouts(session)
    return accepted


def _run_to_the_end(factory: sessionmaker[Session]) -> int:
    chunks = 0
    while _chunk(factory) is not None:
        chunks += 1
    return chunks


def _fanout(factory: sessionmaker[Session], tenant_id: uuid.UUID, fanout_id: uuid.UUID) -> Fanout:
    with factory() as session:
        return get_fanout(session, tenant_id=tenant_id, id=fanout_id)


def _notified(factory: sessionmaker[Session], fanout_id: uuid.UUID) -> Counter[str]:
    """How many notifications of the fan-out each user has."""
    with factory() as session:
        users = session.scalars(select(Notification.user_id).where(Notification.fanout_id == fanout_id))
        return Counter(user for user in users if user is not None)


def test_each_subscriber_gets_what_a_send_with_their_user_id_would_and_the_others_are_skipped(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    kinds = {
        0: None,  # no profile
        1: {"email": "x@example.com", "preferences": {"email": False}},  # opted out of email
        2: {"email": None, "phone": "+14155550100"},  # no email address
        3: {"timezone": "Asia/Tokyo", "quiet_hours": "00:00-23:59:59"},  # in their quiet hours
        4: {},  # a plain email profile
    }
    profiles: dict[str, dict[str, Any]] = {}
    for index, user in enumerate(_users(3000)):
        kind = kinds[index % 5]
        profiles[user] = None if kind is None else {"email": f"{user}@example.com", **kind}
    _topic(factory, tenant_id, profiles)
    with transaction(factory) as session:
        # One message per user per minute, and one of them got theirs already.
        session.execute(update(Tenant).where(Tenant.id == tenant_id).values(rate_limit=1))
        tenant = session.get_one(Tenant, tenant_id)
        accept_notification(
            session,
            tenant_id=tenant_id,
            request=NotificationRequest.model_validate({**NEWS, "topic": None, "user_id": "u-00004"}),
            rate=RULES.limits_of(tenant),
        )
    fanout_id = _start(factory, tenant_id)

    assert _run_to_the_end(factory) == 4  # three chunks of subscribers, then the one that finds none

    fanout = _fanout(factory, tenant_id, fanout_id)
    assert (fanout.status, fanout.recipients, fanout.created, fanout.skipped) == ("done", 3000, 1199, 1801)
    assert fanout.skipped_reasons == {"no_address": 1200, "opted_out": 600, "rate_limited": 1}
    assert fanout.finished_at is not None
    notified = _notified(factory, fanout_id)
    created = {user for index, user in enumerate(_users(3000)) if index % 5 in (3, 4)} - {"u-00004"}
    assert set(notified) == created
    assert set(notified.values()) == {1}
    with factory() as session:
        rows = session.execute(
            select(
                Notification.user_id,
                Notification.recipient,
                Notification.status,
                Notification.deferred_reason,
            ).where(Notification.fanout_id == fanout_id)
        ).all()
        outbox = session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .join(Notification)
            .where(Notification.fanout_id == fanout_id)
        )
    for user, recipient, status, deferred_reason in rows:
        quiet = int(user.removeprefix("u-")) % 5 == 3
        assert recipient == f"{user}@example.com"
        assert (status, deferred_reason) == (("scheduled", "quiet_hours") if quiet else ("queued", None))
    # The due ones owe their publish.
    assert outbox == sum(1 for row in rows if row.status == "queued") == 599


def test_a_fanout_resumes_where_its_last_committed_chunk_ended_after_a_crash(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    _topic(factory, tenant_id, _email_profiles(2500))
    fanout_id = _start(factory, tenant_id)
    assert _chunk(factory) is not None

    # A runner dies in the middle of the second chunk: its transaction never commits. While it held
    # the fan-out, another runner found nothing to take (SKIP LOCKED), and started nothing twice.
    with pytest.raises(RuntimeError), transaction(factory) as dying:
        _chunk_in(dying)
        assert _chunk(factory) is None
        raise RuntimeError("killed")
    assert _fanout(factory, tenant_id, fanout_id).created == 1000

    assert _run_to_the_end(factory) == 3  # a fresh runner: the two chunks left, then done
    fanout = _fanout(factory, tenant_id, fanout_id)
    assert (fanout.status, fanout.created, fanout.skipped) == ("done", 2500, 0)
    notified = _notified(factory, fanout_id)
    assert set(notified) == set(_users(2500))
    assert set(notified.values()) == {1}


def test_a_fanout_whose_runner_died_after_its_last_part_ended_is_finished_by_the_scheduler(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    _topic(factory, tenant_id, _email_profiles(10))
    fanout_id = _start(factory, tenant_id)
    with transaction(factory) as session:
        _chunk_in(session)
    with transaction(factory) as session:  # The part ends; the runner dies before finishing the fan-out.
        assert _chunk_in(session) == []
    assert _fanout(factory, tenant_id, fanout_id).status == "running"

    with transaction(factory) as session:  # The scheduler's job (services/scheduler/loop.py).
        assert finish_fanouts(session) == 1
    fanout = _fanout(factory, tenant_id, fanout_id)
    assert (fanout.status, fanout.created) == ("done", 10)
    assert fanout.finished_at is not None


def test_a_subscriber_cannot_get_two_notifications_of_one_fanout(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    _topic(factory, tenant_id, _email_profiles(10))
    fanout_id = _start(factory, tenant_id)
    _run_to_the_end(factory)
    with transaction(factory) as session:  # Progress lost: as if a chunk ran twice.
        session.execute(update(Fanout).where(Fanout.id == fanout_id).values(status="running"))
        session.execute(
            update(FanoutPart).where(FanoutPart.fanout_id == fanout_id).values(done=False, last_user_id=None)
        )

    with pytest.raises(IntegrityError, match="uq_notifications_fanout_user"):
        _chunk(factory)
    assert set(_notified(factory, fanout_id).values()) == {1}


def test_a_cancelled_fanout_creates_nothing_more_and_keeps_what_it_created(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    _topic(factory, tenant_id, _email_profiles(2500))
    fanout_id = _start(factory, tenant_id)
    _chunk(factory)

    with transaction(factory) as session:
        cancelled = cancel_fanout(session, tenant_id=tenant_id, id=fanout_id)
    assert (cancelled.status, cancelled.created) == ("cancelled", 1000)
    assert _chunk(factory) is None
    assert sum(_notified(factory, fanout_id).values()) == 1000
    with transaction(factory) as session:  # Cancelling again changes nothing.
        assert cancel_fanout(session, tenant_id=tenant_id, id=fanout_id).status == "cancelled"


def test_a_done_fanout_cannot_be_cancelled(factory: sessionmaker[Session], tenant_id: uuid.UUID) -> None:
    _topic(factory, tenant_id, _email_profiles(3))
    fanout_id = _start(factory, tenant_id)
    _run_to_the_end(factory)

    with pytest.raises(Conflict), transaction(factory) as session:
        cancel_fanout(session, tenant_id=tenant_id, id=fanout_id)


def test_a_spent_tenant_quota_pauses_the_fanout_instead_of_skipping_subscribers(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    _topic(factory, tenant_id, _email_profiles(2500))
    with transaction(factory) as session:
        session.execute(update(Tenant).where(Tenant.id == tenant_id).values(sends_per_minute=1500))
    fanout_id = _start(factory, tenant_id)
    # Both chunks in one quota minute (windows follow the database's clock, aligned to the minute).
    wait_until(lambda: _seconds_into_the_minute(factory) < 50, timeout=15, what="a quota minute to begin")

    assert _run_to_the_end(factory) == 2  # 1000, then 500 before the quota ran out
    fanout = _fanout(factory, tenant_id, fanout_id)
    (part,) = fanout.parts
    assert (fanout.status, fanout.created, fanout.skipped, part.last_user_id) == (
        "running",
        1500,
        0,
        "u-01499",
    )
    assert part.resume_at > datetime.now(UTC)

    with transaction(factory) as session:  # The quota's minute is over.
        session.execute(delete(RateLimitCounter))
        session.execute(
            update(FanoutPart).where(FanoutPart.fanout_id == fanout_id).values(resume_at=func.now())
        )
    _run_to_the_end(factory)
    fanout = _fanout(factory, tenant_id, fanout_id)
    assert (fanout.status, fanout.created, fanout.skipped) == ("done", 2500, 0)
    assert set(_notified(factory, fanout_id)) == set(_users(2500))


def _seconds_into_the_minute(factory: sessionmaker[Session]) -> float:
    with factory() as session:
        return float(session.scalar(text("SELECT extract(second FROM now())")) or 0)


def test_running_fanouts_take_turns(factory: sessionmaker[Session], tenant_id: uuid.UUID) -> None:
    _topic(factory, tenant_id, _email_profiles(2500))
    first, second = _start(factory, tenant_id), _start(factory, tenant_id)

    taken = []
    for _ in range(4):
        accepted = _chunk(factory)
        assert accepted
        taken.append(accepted[0].notification.fanout_id)
    assert taken == [first, second, first, second]


def test_an_inapp_topic_send_reaches_each_subscribers_own_inbox(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    """An inapp notification's recipient is its user: each subscriber's, not the chunk's first."""
    _topic(factory, tenant_id, dict.fromkeys(_users(3)))
    with transaction(factory) as session:
        request = NotificationRequest.model_validate(
            {"channel": "inapp", "topic": "news", "content": {"body": "Hello"}}
        )
        fanout_id = start_fanout(session, tenant_id=tenant_id, request=request).id

    _run_to_the_end(factory)

    with factory() as session:
        rows = session.execute(
            select(Notification.user_id, Notification.recipient).where(Notification.fanout_id == fanout_id)
        ).all()
    assert sorted((row.user_id, row.recipient) for row in rows) == [(user, user) for user in _users(3)]


def test_the_parts_of_a_big_fanout_are_created_side_by_side_each_subscriber_once(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    subscribers = 2 * SUBSCRIBERS_PER_PART + 100
    _topic(factory, tenant_id, _email_profiles(subscribers))
    fanout_id = _start(factory, tenant_id)
    half = subscribers // 2
    boundary = _users(subscribers)[half]
    assert [
        (part.first_user_id, part.end_user_id) for part in _fanout(factory, tenant_id, fanout_id).parts
    ] == [
        (None, boundary),
        (boundary, None),
    ]

    # While one runner holds the first part, another takes the second.
    with transaction(factory) as first_runner:
        held = _chunk_in(first_runner)
        beside = _chunk(factory)
    assert held and beside
    assert [item.notification.user_id for item in held] == _users(CHUNK)
    assert [item.notification.user_id for item in beside] == _users(half + CHUNK)[half:]

    # Subscribed while it runs, where no part has got to yet: in the middle of the first part's range
    # and after the last subscriber. Both are created.
    late = ["u-04000-late", "u-99999"]
    _topic(factory, tenant_id, {user: {"email": f"{user}@example.com"} for user in late})
    _run_to_the_end(factory)

    fanout = _fanout(factory, tenant_id, fanout_id)
    assert (fanout.status, fanout.created, fanout.skipped) == ("done", subscribers + 2, 0)
    assert all(part.done for part in fanout.parts)
    notified = _notified(factory, fanout_id)
    assert set(notified) == {*_users(subscribers), *late}
    assert set(notified.values()) == {1}


def test_cancelling_waits_for_the_chunks_under_way_and_stops_every_part(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    _topic(factory, tenant_id, _email_profiles(2 * SUBSCRIBERS_PER_PART))
    fanout_id = _start(factory, tenant_id)

    with ThreadPoolExecutor(1) as canceller, transaction(factory) as runner:
        assert _chunk_in(runner)
        cancelling = canceller.submit(_cancel, factory, tenant_id, fanout_id)
        wait_until(
            lambda: _cancel_waiting_for_a_lock(factory), timeout=10, what="the cancel to wait for the chunk"
        )
        assert not cancelling.done()
    assert cancelling.result(timeout=10) == ("cancelled", CHUNK)  # The chunk committed first.

    assert _chunk(factory) is None  # Neither part is taken again.
    assert sum(_notified(factory, fanout_id).values()) == CHUNK


def _cancel(factory: sessionmaker[Session], tenant_id: uuid.UUID, fanout_id: uuid.UUID) -> tuple[str, int]:
    with transaction(factory) as session:
        fanout = cancel_fanout(session, tenant_id=tenant_id, id=fanout_id)
        return fanout.status, fanout.created


def _cancel_waiting_for_a_lock(factory: sessionmaker[Session]) -> bool:
    with factory() as session:
        waiting = session.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                " AND query LIKE 'UPDATE fanouts%'"
            )
        )
    return bool(waiting)
