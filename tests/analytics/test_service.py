"""Analytics over known rows in a private database: exact figures, the window, tenant isolation."""

import math
import secrets
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from pulse.analytics.schemas import FailureReason
from pulse.analytics.service import channel_summaries, resolve_window, summarize, throughput
from pulse.db import transaction
from pulse.db.models import notifications_table
from pulse.errors import InvalidInput
from pulse.tenants.service import create_tenant

UNTIL = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
SINCE = UNTIL - timedelta(hours=24)


def _tenant(factory: sessionmaker[Session]) -> uuid.UUID:
    with transaction(factory) as session:
        return create_tenant(session, name=f"analytics-{secrets.token_hex(4)}").id


def _insert(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    channel: str = "email",
    status: str,
    created_at: datetime,
    delivered_at: datetime | None = None,
    failed_at: datetime | None = None,
    attempt_count: int = 0,
    last_error: str | None = None,
) -> None:
    """A row as the workers leave it: updated_at is the last change (delivery or failure, if any)."""
    session.execute(
        insert(notifications_table).values(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            channel=channel,
            priority="normal",
            recipient="ada@example.com",
            status=status,
            content={"subject": "s", "body": "b"},
            created_at=created_at,
            updated_at=max(t for t in (created_at, delivered_at, failed_at) if t is not None),
            delivered_at=delivered_at,
            failed_at=failed_at,
            attempt_count=attempt_count,
            last_error=last_error,
        )
    )


def _percentile_cont(values: list[float], fraction: float) -> float:
    """PostgreSQL's percentile_cont: linear interpolation between the two nearest ranks."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    lower, upper = math.floor(position), math.ceil(position)
    return ordered[lower] + (position - lower) * (ordered[upper] - ordered[lower])


# --- the window ----------------------------------------------------------------------------------


def test_the_window_defaults_to_the_last_24_hours_and_reads_naive_instants_as_utc() -> None:
    now = datetime(2026, 3, 10, 12, 0, 5, tzinfo=UTC)
    assert resolve_window(since=None, until=None, now=now).since == now - timedelta(hours=24)
    assert resolve_window(since=None, until=None, now=now).until == now

    window = resolve_window(since=datetime(2026, 3, 9, 8, 0), until=None, now=now)
    assert window.since == datetime(2026, 3, 9, 8, 0, tzinfo=UTC)
    assert window.until == now

    paris = timezone(timedelta(hours=1))
    window = resolve_window(since=None, until=datetime(2026, 3, 10, 9, 0, tzinfo=paris), now=now)
    assert window.until == datetime(2026, 3, 10, 8, 0, tzinfo=UTC)
    assert window.until.tzinfo is UTC
    assert window.since == window.until - timedelta(hours=24)


def test_a_reversed_or_too_long_window_is_refused_at_since() -> None:
    with pytest.raises(InvalidInput) as reversed_window:
        resolve_window(since=UNTIL + timedelta(seconds=1), until=UNTIL, now=UNTIL)
    assert reversed_window.value.location == ("query", "since")

    with pytest.raises(InvalidInput) as future_since:
        resolve_window(since=UNTIL + timedelta(minutes=1), until=None, now=UNTIL)
    assert future_since.value.location == ("query", "since")

    with pytest.raises(InvalidInput) as too_long:
        resolve_window(since=UNTIL - timedelta(days=31, seconds=1), until=UNTIL, now=UNTIL)
    assert too_long.value.location == ("query", "since")

    assert resolve_window(since=UNTIL - timedelta(days=31), until=UNTIL, now=UNTIL).until == UNTIL
    assert resolve_window(since=UNTIL, until=UNTIL, now=UNTIL).since == UNTIL


# --- per channel ---------------------------------------------------------------------------------


def test_channel_figures_are_exact(factory: sessionmaker[Session]) -> None:
    tenant_id, other_tenant_id = _tenant(factory), _tenant(factory)
    base = UNTIL - timedelta(hours=2)
    delivery_seconds = [0.5, 1.0, 2.0, 3.0, 4.0, 10.0, 30.0]
    delivered_attempts = [1, 1, 2, 1, 3, 1, 1]
    failures = [
        ("550 mailbox unavailable", 3),
        ("550 mailbox unavailable", 3),
        ("550 mailbox unavailable", 1),
        ("connection timed out", 3),
        ("connection timed out", 3),
        ("d-error", 1),
        ("c-error", 1),
        ("b-error", 1),
        ("a-error", 1),
    ]
    with transaction(factory) as session:
        for i, (seconds, attempts) in enumerate(zip(delivery_seconds, delivered_attempts, strict=True)):
            created = base + timedelta(minutes=i)
            _insert(
                session,
                tenant_id,
                status="delivered",
                created_at=created,
                delivered_at=created + timedelta(seconds=seconds),
                attempt_count=attempts,
            )
        for i, (error, attempts) in enumerate(failures):
            created = base + timedelta(minutes=30 + i)
            _insert(
                session,
                tenant_id,
                status="failed",
                created_at=created,
                failed_at=created + timedelta(minutes=5),
                attempt_count=attempts,
                last_error=error,
            )
        _insert(session, tenant_id, status="queued", created_at=base)
        _insert(session, tenant_id, status="retrying", created_at=base, attempt_count=2, last_error="busy")
        _insert(session, tenant_id, status="cancelled", created_at=base)
        # Neither of these is retried, nor finished: they count only in total and by_status.
        _insert(session, tenant_id, channel="sms", status="queued", created_at=base)
        _insert(session, tenant_id, channel="sms", status="sending", created_at=base, attempt_count=1)
        # In-app: a read notification was delivered first.
        _insert(
            session,
            tenant_id,
            channel="inapp",
            status="read",
            created_at=base,
            delivered_at=base + timedelta(seconds=2),
            attempt_count=1,
        )
        _insert(
            session,
            tenant_id,
            channel="inapp",
            status="delivered",
            created_at=base,
            delivered_at=base + timedelta(seconds=4),
            attempt_count=1,
        )
        # Another tenant's notifications, in the same channels and minutes, count for nobody else.
        for channel in ("email", "sms", "webhook"):
            _insert(
                session,
                other_tenant_id,
                channel=channel,
                status="failed",
                created_at=base,
                failed_at=base + timedelta(seconds=1),
                attempt_count=9,
                last_error="550 mailbox unavailable",
            )

    with factory() as session:
        summaries = channel_summaries(
            session, tenant_id=tenant_id, window=resolve_window(since=SINCE, until=UNTIL, now=UNTIL)
        )

    assert list(summaries) == ["email", "inapp", "sms"]
    email = summaries["email"]
    assert email.total == 7 + 9 + 3
    assert email.by_status == {"delivered": 7, "failed": 9, "queued": 1, "retrying": 1, "cancelled": 1}
    assert email.delivery_rate == pytest.approx(7 / 16)
    assert email.avg_delivery_seconds == pytest.approx(sum(delivery_seconds) / 7)
    assert email.p95_delivery_seconds == pytest.approx(_percentile_cont(delivery_seconds, 0.95))
    assert email.p95_delivery_seconds == pytest.approx(24.0)  # 10 + 0.7 * (30 - 10)
    finished_attempts = delivered_attempts + [attempts for _, attempts in failures]
    assert email.avg_attempts == pytest.approx(sum(finished_attempts) / len(finished_attempts))
    # 2 delivered, 4 failed and the retrying one.
    assert email.retried == 2 + 4 + 1
    # Most frequent first; ties in alphabetical order; only five.
    assert email.top_failure_reasons == [
        FailureReason(reason="550 mailbox unavailable", count=3),
        FailureReason(reason="connection timed out", count=2),
        FailureReason(reason="a-error", count=1),
        FailureReason(reason="b-error", count=1),
        FailureReason(reason="c-error", count=1),
    ]

    sms = summaries["sms"]
    assert sms.total == 2
    assert sms.by_status == {"queued": 1, "sending": 1}
    assert sms.delivery_rate is None
    assert sms.avg_delivery_seconds is None
    assert sms.p95_delivery_seconds is None
    assert sms.avg_attempts is None
    assert sms.retried == 0
    assert sms.top_failure_reasons == []

    inapp = summaries["inapp"]
    assert inapp.by_status == {"read": 1, "delivered": 1}
    assert inapp.delivery_rate == 1.0
    assert inapp.avg_delivery_seconds == pytest.approx(3.0)
    assert inapp.p95_delivery_seconds == pytest.approx(_percentile_cont([2.0, 4.0], 0.95))
    assert inapp.avg_attempts == pytest.approx(1.0)
    assert (inapp.read, inapp.read_rate) == (1, 0.5)
    assert (email.read, email.read_rate) == (0, None)

    with factory() as session:
        other = channel_summaries(
            session, tenant_id=other_tenant_id, window=resolve_window(since=SINCE, until=UNTIL, now=UNTIL)
        )
    assert {channel: summary.total for channel, summary in other.items()} == {
        "email": 1,
        "sms": 1,
        "webhook": 1,
    }
    assert other["email"].delivery_rate == 0.0
    assert other["email"].avg_attempts == pytest.approx(9.0)


def test_only_notifications_created_in_since_until_count(factory: sessionmaker[Session]) -> None:
    tenant_id = _tenant(factory)
    with transaction(factory) as session:
        for created_at in (
            SINCE - timedelta(microseconds=1),  # before the window
            SINCE,  # its first instant
            UNTIL - timedelta(microseconds=1),  # its last instant
            UNTIL,  # `until` is exclusive
        ):
            _insert(
                session,
                tenant_id,
                status="delivered",
                created_at=created_at,
                delivered_at=created_at + timedelta(seconds=1),
                attempt_count=1,
            )
        # Delivered inside the window but created before it: not part of this window's figures.
        _insert(
            session,
            tenant_id,
            channel="push",
            status="delivered",
            created_at=SINCE - timedelta(hours=1),
            delivered_at=SINCE + timedelta(hours=1),
            attempt_count=1,
        )

    with factory() as session:
        summaries = channel_summaries(
            session, tenant_id=tenant_id, window=resolve_window(since=SINCE, until=UNTIL, now=UNTIL)
        )
        narrow = channel_summaries(
            session,
            tenant_id=tenant_id,
            window=resolve_window(since=SINCE + timedelta(seconds=1), until=UNTIL, now=UNTIL),
        )
        empty = channel_summaries(
            session, tenant_id=tenant_id, window=resolve_window(since=UNTIL, until=UNTIL, now=UNTIL)
        )

    assert list(summaries) == ["email"]
    assert summaries["email"].total == 2
    assert summaries["email"].by_status == {"delivered": 2}
    assert narrow["email"].total == 1
    assert empty == {}


# --- throughput ----------------------------------------------------------------------------------


def test_throughput_has_every_minute_of_the_hour_before_until(factory: sessionmaker[Session]) -> None:
    tenant_id, other_tenant_id = _tenant(factory), _tenant(factory)
    first = UNTIL - timedelta(minutes=60)  # 11:00, the oldest minute
    with transaction(factory) as session:
        # Accepted: 1 at 11:00, 2 at 11:30, 1 at 11:59; none counted before 11:00 or from 12:00 on.
        for created_at in (
            first - timedelta(microseconds=1),
            first,
            first + timedelta(minutes=30, seconds=5),
            first + timedelta(minutes=30, seconds=55),
            UNTIL - timedelta(microseconds=1),
            UNTIL,
        ):
            _insert(session, tenant_id, status="queued", created_at=created_at)
        # Delivered by delivered_at (created days before: a scheduled send); failed by failed_at.
        long_ago = UNTIL - timedelta(days=3)
        for delivered_at in (first + timedelta(minutes=30, seconds=59), first + timedelta(minutes=45)):
            _insert(
                session,
                tenant_id,
                channel="sms",
                status="delivered",
                created_at=long_ago,
                delivered_at=delivered_at,
                attempt_count=1,
            )
        _insert(
            session,
            tenant_id,
            channel="inapp",
            status="read",
            created_at=long_ago,
            delivered_at=first + timedelta(minutes=45, seconds=1),
            attempt_count=1,
        )
        _insert(
            session,
            tenant_id,
            status="failed",
            created_at=long_ago,
            failed_at=first + timedelta(minutes=59, seconds=30),
            attempt_count=3,
            last_error="boom",
        )
        # Finished an hour and more before `until`: outside the buckets.
        _insert(
            session,
            tenant_id,
            status="delivered",
            created_at=long_ago,
            delivered_at=first - timedelta(seconds=1),
            attempt_count=1,
        )
        for minute in (0, 30, 45, 59):
            moment = first + timedelta(minutes=minute)
            _insert(session, other_tenant_id, status="queued", created_at=moment)
            _insert(
                session,
                other_tenant_id,
                status="failed",
                created_at=moment,
                failed_at=moment,
                attempt_count=1,
                last_error="x",
            )

    with factory() as session:
        minutes = throughput(session, tenant_id=tenant_id, until=UNTIL)

    assert len(minutes) == 60
    assert [m.minute for m in minutes] == [first + timedelta(minutes=i) for i in range(60)]
    assert all(m.minute.tzinfo == UTC for m in minutes)
    counts = {
        (m.minute - first) // timedelta(minutes=1): (m.accepted, m.delivered, m.failed)
        for m in minutes
        if (m.accepted, m.delivered, m.failed) != (0, 0, 0)
    }
    assert counts == {0: (1, 0, 0), 30: (2, 1, 0), 45: (0, 2, 0), 59: (1, 0, 1)}


def test_throughput_ends_with_the_minute_until_falls_in(factory: sessionmaker[Session]) -> None:
    tenant_id = _tenant(factory)
    until = UNTIL + timedelta(seconds=30)
    with transaction(factory) as session:
        for created_at in (UNTIL, until - timedelta(microseconds=1), until, UNTIL - timedelta(minutes=59)):
            _insert(session, tenant_id, status="queued", created_at=created_at)

    with factory() as session:
        minutes = throughput(session, tenant_id=tenant_id, until=until)

    assert len(minutes) == 60
    assert minutes[0].minute == UNTIL - timedelta(minutes=59)
    assert minutes[-1].minute == UNTIL
    assert (minutes[0].accepted, minutes[-1].accepted) == (1, 2)
    assert sum(m.accepted for m in minutes) == 3


# --- all together --------------------------------------------------------------------------------


def test_summary_of_a_tenant_without_notifications(factory: sessionmaker[Session]) -> None:
    tenant_id = _tenant(factory)
    window = resolve_window(since=SINCE, until=UNTIL, now=UNTIL)
    with factory() as session:
        summary = summarize(session, tenant_id=tenant_id, window=window, queues=None)

    body = summary.model_dump(mode="json")
    assert body["since"] == "2026-03-09T12:00:00Z"
    assert body["until"] == "2026-03-10T12:00:00Z"
    assert body["channels"] == {}
    assert len(body["throughput"]) == 60
    assert body["throughput"][0] == {
        "minute": "2026-03-10T11:00:00Z",
        "accepted": 0,
        "delivered": 0,
        "failed": 0,
    }
    assert body["queues"] is None
