"""Running due schedules, in a private database (no scheduler of the session's stack takes part)."""

import uuid
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from pulse.db import transaction
from pulse.db.models import Notification, OutboxMessage, Schedule, Tenant
from pulse.errors import InvalidInput, NotFound
from pulse.notifications.schemas import NotificationRequest
from pulse.scheduling.quiet_hours import QuietHours
from pulse.scheduling.schedules import (
    create_schedule,
    delete_schedule,
    get_schedule_with_history,
    list_schedules,
    pause_schedule,
    resume_schedule,
    run_due_schedules,
)
from pulse.tenants.service import create_tenant
from pulse.vocabulary import Status
from services.scheduler.settings import SchedulerSettings

EMAIL = {"channel": "email", "recipient": "ada@example.com", "content": {"subject": "Daily", "body": "Hi"}}
ALWAYS_QUIET = QuietHours(time(0), time(23, 59, 59))


@pytest.fixture(autouse=True)
def _empty(factory: sessionmaker[Session]) -> None:
    """Every test counts the schedules and notifications it finds."""
    with transaction(factory) as session:
        session.execute(delete(Notification))
        session.execute(delete(Schedule))


@pytest.fixture
def tenant_id(factory: sessionmaker[Session]) -> uuid.UUID:
    with transaction(factory) as session:
        return create_tenant(session, name=f"schedules-{uuid.uuid4().hex[:8]}").id


def _schedule(
    factory: sessionmaker[Session],
    tenant_id: uuid.UUID,
    *,
    cron: str = "*/5 * * * *",
    due_since: timedelta | None = timedelta(seconds=1),
    **notification: object,
) -> uuid.UUID:
    """A schedule; with `due_since`, its next run is set that long ago."""
    with transaction(factory) as session:
        schedule = create_schedule(
            session,
            tenant_id=tenant_id,
            cron=cron,
            timezone="Europe/Paris",
            notification=NotificationRequest.model_validate({**EMAIL, **notification}),
        )
        if due_since is not None:
            schedule.next_run_at = datetime.now(UTC) - due_since
        return schedule.id


def _run(factory: sessionmaker[Session], *, batch_size: int = 100) -> int:
    with transaction(factory) as session:
        return run_due_schedules(session, default_quiet_hours=None, batch_size=batch_size)


def _notifications_of(factory: sessionmaker[Session], schedule_id: uuid.UUID) -> list[Notification]:
    with factory() as session:
        return list(session.scalars(select(Notification).where(Notification.schedule_id == schedule_id)))


def _get(factory: sessionmaker[Session], schedule_id: uuid.UUID) -> Schedule:
    with factory() as session:
        return session.get_one(Schedule, schedule_id)


def test_a_due_schedule_sends_one_notification_linked_to_it_and_moves_to_its_next_run(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    schedule_id = _schedule(factory, tenant_id)
    before = datetime.now(UTC)

    assert _run(factory) == 1

    [notification] = _notifications_of(factory, schedule_id)
    assert notification.tenant_id == tenant_id
    assert (notification.channel, notification.recipient) == ("email", "ada@example.com")
    assert notification.content == {"subject": "Daily", "body": "Hi"}
    assert notification.status == Status.QUEUED
    schedule = _get(factory, schedule_id)
    assert schedule.run_count == 1
    assert schedule.last_run_at is not None and schedule.last_run_at >= before
    assert before < schedule.next_run_at <= before + timedelta(minutes=5)
    assert schedule.next_run_at.astimezone(UTC).minute % 5 == 0
    # Published by the scheduler's sweep in the same tick: the outbox row is due at once.
    with factory() as session:
        outbox = session.scalars(
            select(OutboxMessage).where(OutboxMessage.notification_id == notification.id)
        ).one()
    assert outbox.available_at <= datetime.now(UTC)

    assert _run(factory) == 0  # Not due any more.
    assert len(_notifications_of(factory, schedule_id)) == 1


def test_a_schedule_not_yet_due_or_paused_does_not_run(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    not_due = _schedule(factory, tenant_id, due_since=None)
    paused = _schedule(factory, tenant_id)
    with transaction(factory) as session:
        pause_schedule(session, tenant_id=tenant_id, id=paused)

    assert _run(factory) == 0

    assert _notifications_of(factory, not_due) == []
    assert _notifications_of(factory, paused) == []
    assert _get(factory, paused).run_count == 0


def test_two_concurrent_runs_send_one_notification_per_schedule(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    ids = [_schedule(factory, tenant_id) for _ in range(5)]
    with factory() as first, first.begin():
        # The first scheduler holds its batch locked (not committed yet) while the second one runs.
        ran_first = run_due_schedules(first, default_quiet_hours=None, batch_size=3)
        with factory() as second, second.begin():
            ran_second = run_due_schedules(second, default_quiet_hours=None, batch_size=100)

    assert (ran_first, ran_second) == (3, 2)
    assert [len(_notifications_of(factory, schedule_id)) for schedule_id in ids] == [1] * 5
    assert _run(factory) == 0


def test_missed_runs_are_not_replayed_one_catch_up_run_then_the_next_regular_one(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    # Every 5 minutes, and the scheduler was down for an hour: 12 runs missed.
    schedule_id = _schedule(factory, tenant_id, due_since=timedelta(hours=1))

    assert _run(factory) == 1
    assert _run(factory) == 0

    assert len(_notifications_of(factory, schedule_id)) == 1
    schedule = _get(factory, schedule_id)
    assert schedule.run_count == 1
    assert datetime.now(UTC) < schedule.next_run_at <= datetime.now(UTC) + timedelta(minutes=5)


def test_quiet_hours_are_the_tenant_s_else_the_deployment_s(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    deferred_by_default = _schedule(factory, tenant_id)
    with transaction(factory) as session:
        run_due_schedules(session, default_quiet_hours=ALWAYS_QUIET, batch_size=10)
    [held] = _notifications_of(factory, deferred_by_default)
    assert (held.status, held.deferred_reason) == (Status.SCHEDULED, "quiet_hours")

    with transaction(factory) as session:
        session.execute(update(Tenant).where(Tenant.id == tenant_id).values(quiet_hours="off"))
    not_deferred = _schedule(factory, tenant_id)
    with transaction(factory) as session:
        run_due_schedules(session, default_quiet_hours=ALWAYS_QUIET, batch_size=10)
    [sent] = _notifications_of(factory, not_deferred)
    assert sent.status == Status.QUEUED


def test_a_stored_notification_that_is_no_longer_valid_pauses_its_schedule_without_blocking_others(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    broken = _schedule(factory, tenant_id)
    healthy = _schedule(factory, tenant_id)
    with transaction(factory) as session:
        session.execute(update(Schedule).where(Schedule.id == broken).values(notification={"channel": "fax"}))

    assert _run(factory) == 1

    assert _get(factory, broken).paused
    assert _notifications_of(factory, broken) == []
    assert len(_notifications_of(factory, healthy)) == 1


def test_resume_skips_the_runs_missed_while_paused(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    schedule_id = _schedule(factory, tenant_id, due_since=timedelta(hours=2))
    with transaction(factory) as session:
        pause_schedule(session, tenant_id=tenant_id, id=schedule_id)
    with transaction(factory) as session:
        resumed = resume_schedule(session, tenant_id=tenant_id, id=schedule_id)
    assert not resumed.paused
    assert resumed.next_run_at > datetime.now(UTC)
    assert _run(factory) == 0


def test_history_lists_the_schedule_s_latest_notifications_newest_first(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    schedule_id = _schedule(factory, tenant_id)
    for _ in range(3):
        _run(factory)
        with transaction(factory) as session:
            session.execute(
                update(Schedule).where(Schedule.id == schedule_id).values(next_run_at=datetime.now(UTC))
            )
    with factory() as session:
        found = get_schedule_with_history(session, tenant_id=tenant_id, id=schedule_id, history=2)
    created = sorted((n.created_at, n.id) for n in _notifications_of(factory, schedule_id))
    assert found.schedule.run_count == 3
    assert [run.id for run in found.history] == [created[2][1], created[1][1]]
    assert {run.status for run in found.history} == {Status.QUEUED}


def test_schedules_belong_to_their_tenant(factory: sessionmaker[Session], tenant_id: uuid.UUID) -> None:
    schedule_id = _schedule(factory, tenant_id)
    with transaction(factory) as session:
        other = create_tenant(session, name=f"other-{uuid.uuid4().hex[:8]}").id
    with factory() as session:
        for action in (get_schedule_with_history, pause_schedule, resume_schedule, delete_schedule):
            with pytest.raises(NotFound):
                action(session, tenant_id=other, id=schedule_id)
        assert list_schedules(session, tenant_id=other, limit=10, cursor=None) == ([], None)


def test_the_list_pages_newest_first(factory: sessionmaker[Session], tenant_id: uuid.UUID) -> None:
    ids = [_schedule(factory, tenant_id, due_since=None) for _ in range(5)]
    seen: list[uuid.UUID] = []
    cursor = None
    with factory() as session:
        while True:
            page, cursor = list_schedules(session, tenant_id=tenant_id, limit=2, cursor=cursor)
            seen.extend(schedule.id for schedule in page)
            if cursor is None:
                break
        with pytest.raises(InvalidInput):
            list_schedules(session, tenant_id=tenant_id, limit=2, cursor="not-a-cursor")
    assert seen == list(reversed(ids))


def test_a_schedule_that_never_fires_or_sets_send_at_is_refused(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    with factory() as session:
        with pytest.raises(InvalidInput, match="never fires") as never:
            create_schedule(
                session,
                tenant_id=tenant_id,
                cron="0 0 30 2 *",
                timezone="UTC",
                notification=NotificationRequest.model_validate(EMAIL),
            )
        assert never.value.location == ("body", "cron")
        with pytest.raises(InvalidInput, match="send_at") as fixed:
            create_schedule(
                session,
                tenant_id=tenant_id,
                cron="0 9 * * *",
                timezone="UTC",
                notification=NotificationRequest.model_validate({**EMAIL, "send_at": "2030-01-01T09:00:00Z"}),
            )
        assert fixed.value.location == ("body", "notification", "send_at")


def test_the_scheduler_reads_the_deployment_quiet_hours_from_pulse_quiet_hours(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # No `.env` of the working directory.
    monkeypatch.setenv("PULSE_QUIET_HOURS", "23:00-07:00")
    assert SchedulerSettings().default_quiet_hours == QuietHours(time(23), time(7))
    monkeypatch.setenv("PULSE_QUIET_HOURS", "off")
    assert SchedulerSettings().default_quiet_hours is None
    monkeypatch.delenv("PULSE_QUIET_HOURS")
    assert SchedulerSettings().quiet_hours == "22:00-08:00"
