"""Running due schedules, in a private database (no scheduler of the session's stack takes part)."""

import tracemalloc
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from time import monotonic

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from pulse.db import transaction
from pulse.db.models import Notification, OutboxMessage, Schedule, Template, Tenant
from pulse.errors import InvalidInput, NotFound
from pulse.notifications.acceptance import AcceptanceSettings
from pulse.notifications.schemas import NotificationRequest
from pulse.rate_limits.service import RateLimit, SendLimits
from pulse.schedules.runs import run_due_schedules
from pulse.schedules.service import (
    create_schedule,
    delete_schedule,
    get_schedule_with_history,
    list_schedules,
    pause_schedule,
    resume_schedule,
)
from pulse.templates.schemas import TemplateIn
from pulse.templates.service import create_template
from pulse.tenants.service import create_tenant
from pulse.timing.quiet_hours import QuietHours
from pulse.vocabulary import Channel, Status
from services.scheduler.settings import SchedulerSettings

EMAIL = {"channel": "email", "recipient": "ada@example.com", "content": {"subject": "Daily", "body": "Hi"}}
ALWAYS_QUIET = "00:00-23:59:59"
# The deployment's rules, spelled out so that no PULSE_* variable of the environment plays a part.
RULES = AcceptanceSettings(
    enabled_channels=["email", "sms", "webhook"],
    quiet_hours="off",
    webhook_allowlist="",
    rate_limit=0,
    rate_limit_window_seconds=60,
    tenant_sends_per_minute=0,
)
PAUSE_AFTER = 3


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


def _run(factory: sessionmaker[Session], *, rules: AcceptanceSettings = RULES, batch_size: int = 100) -> int:
    with transaction(factory) as session:
        return _run_in(session, rules=rules, batch_size=batch_size)


def _run_in(session: Session, *, rules: AcceptanceSettings = RULES, batch_size: int = 100) -> int:
    return run_due_schedules(session, rules=rules, pause_after_failures=PAUSE_AFTER, batch_size=batch_size)


def _make_due(factory: sessionmaker[Session], *schedule_ids: uuid.UUID) -> None:
    with transaction(factory) as session:
        session.execute(
            update(Schedule).where(Schedule.id.in_(schedule_ids)).values(next_run_at=datetime.now(UTC))
        )


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
        ran_first = _run_in(first, batch_size=3)
        with factory() as second, second.begin():
            ran_second = _run_in(second)

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
    always_quiet = AcceptanceSettings(**{**RULES.model_dump(), "quiet_hours": ALWAYS_QUIET})
    deferred_by_default = _schedule(factory, tenant_id)
    _run(factory, rules=always_quiet)
    [held] = _notifications_of(factory, deferred_by_default)
    assert (held.status, held.deferred_reason) == (Status.SCHEDULED, "quiet_hours")

    with transaction(factory) as session:
        session.execute(update(Tenant).where(Tenant.id == tenant_id).values(quiet_hours="off"))
    not_deferred = _schedule(factory, tenant_id)
    _run(factory, rules=always_quiet)
    [sent] = _notifications_of(factory, not_deferred)
    assert sent.status == Status.QUEUED


def test_a_hostile_template_fails_its_run_quickly_without_holding_memory(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    # A string ten times as long at each line: it held 100 MB while the scheduler ran it.
    body = (
        "{% set s0 = 'x' * 250000 %}{% set s1 = s0 ~ s0 ~ s0 ~ s0 ~ s0 ~ s0 ~ s0 ~ s0 ~ s0 ~ s0 %}"
        "{% set s2 = s1 ~ s1 ~ s1 ~ s1 ~ s1 ~ s1 ~ s1 ~ s1 ~ s1 ~ s1 %}{% set s3 = s2 ~ s2 ~ s2 %}"
    )
    with transaction(factory) as session:
        create_template(
            session,
            tenant_id=tenant_id,
            request=TemplateIn(name="hostile", channel="email", subject="S", body=body),
        )
    hostile = _schedule(factory, tenant_id, content=None, template="hostile")
    healthy = _schedule(factory, _other_tenant(factory))

    started = monotonic()
    tracemalloc.start()
    try:
        assert _run(factory) == 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The render stops within its deadline; the rest of this time is the run's database work, which a
    # busy machine slowed past 1 s. The memory bound is the sharp one.
    assert monotonic() - started < 3
    assert peak < 16 * 1024 * 1024

    assert _notifications_of(factory, hostile) == []
    assert _get(factory, hostile).last_error == (
        "body: the body went over a limit: the joined string would exceed 256 KiB"
    )
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
        _make_due(factory, schedule_id)
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


def test_the_scheduler_reads_the_gateway_s_acceptance_rules_and_its_pause_threshold(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # No `.env` of the working directory.
    for name, value in {
        "PULSE_QUIET_HOURS": "23:00-07:00",
        "PULSE_RATE_LIMIT": "3",
        "PULSE_RATE_LIMIT_WINDOW_SECONDS": "120",
        "PULSE_TENANT_SENDS_PER_MINUTE": "900",
        "PULSE_WEBHOOK_ALLOWLIST": "hooks.internal",
        "PULSE_ENABLED_CHANNELS": "email,webhook",
        "PULSE_SCHEDULER_PAUSE_AFTER_FAILURES": "7",
    }.items():
        monkeypatch.setenv(name, value)
    settings = SchedulerSettings()
    assert settings.acceptance.default_quiet_hours == QuietHours(time(23), time(7))
    assert settings.acceptance.rate_for(limit=None, window_seconds=None, sends_per_minute=None) == SendLimits(
        per_recipient=RateLimit(3, 120), per_tenant=RateLimit(900, 60)
    )
    assert settings.acceptance.webhook_allowlist == "hooks.internal"
    assert settings.acceptance.enabled_channels == [Channel.EMAIL, Channel.WEBHOOK]
    assert settings.pause_after_failures == 7
    monkeypatch.setenv("PULSE_QUIET_HOURS", "off")
    monkeypatch.delenv("PULSE_SCHEDULER_PAUSE_AFTER_FAILURES")
    assert SchedulerSettings().acceptance.default_quiet_hours is None
    assert SchedulerSettings().pause_after_failures == 5


# --- failing runs ------------------------------------------------------------------------------------
# A run that raises must cost its own schedule that run, never another schedule's (of any tenant).

EXPLODING_RECIPIENT = "explode@example.com"


@pytest.fixture
def database_refusing_one_recipient(factory: sessionmaker[Session]) -> Iterator[None]:
    """PostgreSQL raises an error when a notification to EXPLODING_RECIPIENT is inserted: a database
    error in the middle of a run, which aborts whatever transaction (or savepoint) it happens in."""
    with transaction(factory) as session:
        session.execute(
            text(
                f"""
                CREATE FUNCTION refuse_exploding_recipient() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF NEW.recipient = '{EXPLODING_RECIPIENT}' THEN
                        RAISE EXCEPTION 'injected failure';
                    END IF;
                    RETURN NEW;
                END $$;
                CREATE TRIGGER refuse_exploding_recipient BEFORE INSERT ON notifications
                    FOR EACH ROW EXECUTE FUNCTION refuse_exploding_recipient();
                """
            )
        )
    yield
    with transaction(factory) as session:
        session.execute(text("DROP TRIGGER refuse_exploding_recipient ON notifications"))
        session.execute(text("DROP FUNCTION refuse_exploding_recipient()"))


def _store_template(factory: sessionmaker[Session], tenant_id: uuid.UUID, name: str, body: str) -> None:
    """Stored as is, as an older version of Pulse might have accepted it."""
    with transaction(factory) as session:
        session.add(Template(tenant_id=tenant_id, name=name, channel="email", subject="s", body=body))


def _other_tenant(factory: sessionmaker[Session]) -> uuid.UUID:
    with transaction(factory) as session:
        return create_tenant(session, name=f"other-{uuid.uuid4().hex[:8]}").id


@pytest.mark.parametrize("failure", ["template raising KeyError", "database error"])
def test_a_schedule_whose_run_fails_does_not_stop_another_tenant_s_and_its_error_is_recorded(
    factory: sessionmaker[Session], tenant_id: uuid.UUID, failure: str, request: pytest.FixtureRequest
) -> None:
    if failure == "database error":
        request.getfixturevalue("database_refusing_one_recipient")
        broken = _schedule(factory, tenant_id, due_since=timedelta(minutes=1), recipient=EXPLODING_RECIPIENT)
    else:
        _store_template(factory, tenant_id, "broken", '{{ "%(a)s" % {} }}')  # Python's % raises KeyError.
        broken = _schedule(
            factory, tenant_id, due_since=timedelta(minutes=1), content=None, template="broken"
        )
    # Due after the broken one, so that it runs later in the same batch.
    healthy = _schedule(factory, _other_tenant(factory))
    before = datetime.now(UTC)

    assert _run(factory) == 1

    assert len(_notifications_of(factory, healthy)) == 1
    assert _get(factory, healthy).run_count == 1
    assert _notifications_of(factory, broken) == []
    schedule = _get(factory, broken)
    assert (schedule.run_count, schedule.consecutive_failures, schedule.paused) == (0, 1, False)
    assert schedule.last_error and schedule.last_error_at is not None and schedule.last_error_at >= before
    if failure == "database error":
        # The tenant reads that it failed, not the database's message.
        assert schedule.last_error.startswith("internal error") and "injected" not in schedule.last_error
    # Moved on to its next run like a successful one: tried again at its rhythm, not every tick.
    assert schedule.next_run_at > datetime.now(UTC)
    assert _run(factory) == 0
    assert _get(factory, broken).consecutive_failures == 1


def test_a_schedule_pauses_after_n_failed_runs_in_a_row_a_run_that_sends_resets_the_count_and_so_does_resume(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    schedule_id = _schedule(factory, tenant_id, content=None, template="weekly")  # No such template yet.

    for _ in range(PAUSE_AFTER - 1):
        _make_due(factory, schedule_id)
        _run(factory)
    failing = _get(factory, schedule_id)
    assert (failing.consecutive_failures, failing.paused, failing.paused_reason) == (
        PAUSE_AFTER - 1,
        False,
        None,
    )
    assert failing.last_error == "template: there is no template named 'weekly'"

    _store_template(factory, tenant_id, "weekly", "Your week")
    _make_due(factory, schedule_id)
    assert _run(factory) == 1
    recovered = _get(factory, schedule_id)
    assert (recovered.run_count, recovered.consecutive_failures) == (1, 0)
    assert recovered.last_error == failing.last_error  # Still on record, with its time.

    with transaction(factory) as session:
        session.execute(delete(Template).where(Template.tenant_id == tenant_id))
    for _ in range(PAUSE_AFTER):
        _make_due(factory, schedule_id)
        _run(factory)
    paused = _get(factory, schedule_id)
    assert (paused.paused, paused.paused_reason, paused.consecutive_failures) == (
        True,
        "failures",
        PAUSE_AFTER,
    )
    _make_due(factory, schedule_id)
    assert _run(factory) == 0
    assert _get(factory, schedule_id).consecutive_failures == PAUSE_AFTER  # Paused: not run at all.

    with transaction(factory) as session:
        resumed = resume_schedule(session, tenant_id=tenant_id, id=schedule_id)
    assert (resumed.paused, resumed.paused_reason, resumed.consecutive_failures) == (False, None, 0)
    assert resumed.next_run_at > datetime.now(UTC)


def test_a_schedule_paused_through_the_api_says_so(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    schedule_id = _schedule(factory, tenant_id)
    with transaction(factory) as session:
        assert pause_schedule(session, tenant_id=tenant_id, id=schedule_id).paused_reason == "requested"


def test_a_stored_notification_that_is_no_longer_valid_is_a_failed_run_that_blocks_no_other(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    broken = _schedule(factory, tenant_id)
    healthy = _schedule(factory, tenant_id)
    with transaction(factory) as session:
        session.execute(update(Schedule).where(Schedule.id == broken).values(notification={"channel": "fax"}))

    assert _run(factory) == 1

    schedule = _get(factory, broken)
    assert schedule.consecutive_failures == 1
    assert schedule.last_error is not None
    assert schedule.last_error.startswith("the stored notification is no longer valid: channel: ")
    assert _notifications_of(factory, broken) == []
    assert len(_notifications_of(factory, healthy)) == 1


# --- the acceptance rules of a direct send -----------------------------------------------------------


@pytest.mark.parametrize(
    ("notification", "reason"),
    [
        (
            {
                "channel": "webhook",
                "recipient": "http://169.254.169.254/latest/meta-data/",
                "content": {"body": "x"},
            },
            "recipient: refused by the SSRF guard: 169.254.169.254 is a cloud metadata address",
        ),
        (
            {**EMAIL, "callback_url": "http://10.0.0.7/status"},
            "callback_url: refused by the SSRF guard: 10.0.0.7 is a private address",
        ),
        (
            {"channel": "push", "recipient": "t" * 64, "content": {"body": "x"}},
            "channel: channel 'push' is not enabled on this deployment (enabled: email, sms, webhook)",
        ),
    ],
)
def test_each_run_is_screened_like_a_direct_send(
    factory: sessionmaker[Session], tenant_id: uuid.UUID, notification: dict[str, object], reason: str
) -> None:
    # Stored before the gateway screened schedules (or before the deployment's rules changed).
    schedule_id = _schedule(factory, tenant_id, **notification)

    assert _run(factory) == 0

    assert _notifications_of(factory, schedule_id) == []
    schedule = _get(factory, schedule_id)
    assert (schedule.last_error, schedule.consecutive_failures) == (reason, 1)


def test_runs_are_rate_limited_like_direct_sends_and_a_limited_run_is_recorded_and_skipped_without_pausing(
    factory: sessionmaker[Session], tenant_id: uuid.UUID
) -> None:
    one_a_day = AcceptanceSettings(
        **{**RULES.model_dump(), "rate_limit": 1, "rate_limit_window_seconds": 86_400}
    )
    first = _schedule(factory, tenant_id, due_since=timedelta(minutes=1))
    second = _schedule(factory, tenant_id)  # Same recipient, same channel: the same rate-limit key.
    other_user = _schedule(factory, tenant_id, user_id="u-2", recipient="bob@example.com")

    assert _run(factory, rules=one_a_day) == 2

    assert [len(_notifications_of(factory, s)) for s in (first, second, other_user)] == [1, 0, 1]
    limited = _get(factory, second)
    assert limited.last_error is not None and limited.last_error.startswith(
        "rate limit exceeded: at most 1 email"
    )
    assert (limited.run_count, limited.consecutive_failures, limited.paused) == (0, 0, False)
    assert limited.next_run_at > datetime.now(UTC)

    for _ in range(PAUSE_AFTER):
        _make_due(factory, second)
        assert _run(factory, rules=one_a_day) == 0
    assert (_get(factory, second).paused, _get(factory, second).consecutive_failures) == (False, 0)
    # The tenant's own limit wins over the deployment's.
    with transaction(factory) as session:
        session.execute(update(Tenant).where(Tenant.id == tenant_id).values(rate_limit=0))
    _make_due(factory, second)
    assert _run(factory, rules=one_a_day) == 1
