"""Recurring schedules: a cron expression in an IANA time zone, and the notification it sends each time.

Cron expressions are croniter's: five fields (minute hour day month weekday) or six, the sixth being
seconds (`* * * * * *` fires every second), plus its `@daily`-style shorthands. They are evaluated on
the wall clock of the schedule's zone, so `0 9 * * *` in Europe/Paris is 09:00 in Paris all year.
Callers own the transaction (commit at the edge).
"""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter
from sqlalchemy import select
from sqlalchemy.orm import Session

from pulse.db.models import Notification, Schedule
from pulse.errors import InvalidInput, NotFound
from pulse.notifications.schemas import NotificationRequest
from pulse.pagination import after_cursor, encode_cursor
from pulse.timing.clock import time_zone, to_instant

DEFAULT_HISTORY = 20
_CRON_FIELDS = (5, 6)


class PauseReason(StrEnum):
    REQUESTED = "requested"  # POST /v1/schedules/{id}/pause
    FAILURES = "failures"  # Its runs failed `pause_after_failures` times in a row.


@dataclass(frozen=True)
class ScheduleRun:
    """One notification a schedule created."""

    id: uuid.UUID
    status: str
    created_at: datetime
    scheduled_for: datetime | None


@dataclass(frozen=True)
class ScheduleWithHistory:
    schedule: Schedule
    history: list[ScheduleRun]


def validate_cron(cron: str, timezone: str) -> ZoneInfo:
    """Check both; return the zone. Raises InvalidInput naming the offending body field."""
    fields = cron.split()
    shorthand = len(fields) == 1 and cron.strip().startswith("@")
    if not (shorthand or len(fields) in _CRON_FIELDS) or not croniter.is_valid(cron):
        raise InvalidInput(
            f"not a valid cron expression: {cron!r} (five fields, or six with seconds last)",
            location=("body", "cron"),
        )
    try:
        return time_zone(timezone)
    except ValueError as error:
        raise InvalidInput(str(error), location=("body", "timezone")) from error


def next_run_after(cron: str, timezone: str, after: datetime) -> datetime:
    """The first instant (UTC) strictly after `after` at which `cron` fires on `timezone`'s wall clock.

    Wall times are walked naively and each is turned into an instant with `to_instant`: a time that a
    spring-forward skips fires at the first instant after the gap; a time that a fall-back repeats
    fires once, at its first occurrence (its second occurrence is at or before `after` by then, and is
    passed over).
    """
    zone = ZoneInfo(timezone)
    wall_times = croniter(cron, after.astimezone(zone).replace(tzinfo=None))
    while True:
        candidate = to_instant(wall_times.get_next(datetime), zone)
        # Bounded: only the wall times of one repeated (or skipped) stretch can land at/before `after`.
        if candidate > after:
            return candidate


def create_schedule(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    cron: str,
    timezone: str,
    notification: NotificationRequest,
) -> Schedule:
    """A schedule whose first run is the next time `cron` fires from now."""
    validate_cron(cron, timezone)
    if notification.send_at is not None:
        # The schedule says when; a fixed send_at would hold every run until that one instant.
        raise InvalidInput(
            "send_at is not allowed in a schedule's notification: the cron expression decides when",
            location=("body", "notification", "send_at"),
        )
    if notification.digest is not None:
        raise InvalidInput(
            "digest is not allowed in a schedule's notification: each run sends one notification",
            location=("body", "notification", "digest"),
        )
    if notification.topic is not None:
        raise InvalidInput(
            "topic is not allowed in a schedule's notification: send to a topic with POST /v1/notifications",
            location=("body", "notification", "topic"),
        )
    now = datetime.now(UTC)
    try:
        next_run_at = next_run_after(cron, timezone, now)
    except CroniterBadDateError as error:
        raise InvalidInput(f"cron expression {cron!r} never fires", location=("body", "cron")) from error
    schedule = Schedule(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        cron=cron,
        timezone=timezone,
        notification=notification.model_dump(mode="json"),
        paused=False,
        paused_reason=None,
        next_run_at=next_run_at,
        last_run_at=None,
        run_count=0,
        consecutive_failures=0,
        last_error=None,
        last_error_at=None,
        created_at=now,
        updated_at=now,
    )
    session.add(schedule)
    session.flush()
    return schedule


def get_schedule(session: Session, *, tenant_id: uuid.UUID, id: uuid.UUID, lock: bool = False) -> Schedule:
    query = select(Schedule).where(Schedule.id == id, Schedule.tenant_id == tenant_id)
    if lock:
        query = query.with_for_update()
    schedule = session.scalars(query).one_or_none()
    if schedule is None:
        raise NotFound(f"schedule {id} not found")
    return schedule


def get_schedule_with_history(
    session: Session, *, tenant_id: uuid.UUID, id: uuid.UUID, history: int = DEFAULT_HISTORY
) -> ScheduleWithHistory:
    """The schedule and the `history` most recent notifications it created, newest first."""
    schedule = get_schedule(session, tenant_id=tenant_id, id=id)
    rows = session.execute(
        select(Notification.id, Notification.status, Notification.created_at, Notification.scheduled_for)
        .where(Notification.schedule_id == id, Notification.tenant_id == tenant_id)
        .order_by(Notification.created_at.desc(), Notification.id.desc())
        .limit(history)
    ).all()
    return ScheduleWithHistory(
        schedule=schedule,
        history=[
            ScheduleRun(
                id=row.id, status=row.status, created_at=row.created_at, scheduled_for=row.scheduled_for
            )
            for row in rows
        ],
    )


def list_schedules(
    session: Session, *, tenant_id: uuid.UUID, limit: int, cursor: str | None
) -> tuple[list[Schedule], str | None]:
    """Newest first, keyset-paginated on (created_at, id): pass the returned cursor for the next page."""
    query = select(Schedule).where(Schedule.tenant_id == tenant_id)
    if cursor is not None:
        query = query.where(after_cursor(cursor, Schedule.created_at, Schedule.id))
    rows = list(
        session.scalars(query.order_by(Schedule.created_at.desc(), Schedule.id.desc()).limit(limit + 1))
    )
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].created_at, rows[-1].id)


def delete_schedule(session: Session, *, tenant_id: uuid.UUID, id: uuid.UUID) -> Schedule:
    """Its notifications stay, unlinked (schedule_id ON DELETE SET NULL). Returns it as it was."""
    schedule = get_schedule(session, tenant_id=tenant_id, id=id, lock=True)
    session.delete(schedule)
    return schedule


def pause_schedule(session: Session, *, tenant_id: uuid.UUID, id: uuid.UUID) -> Schedule:
    """Stop running it (idempotent). Waits for a run in progress, which therefore counts."""
    schedule = get_schedule(session, tenant_id=tenant_id, id=id, lock=True)
    if not schedule.paused:
        schedule.paused = True
        schedule.paused_reason = PauseReason.REQUESTED
        schedule.updated_at = datetime.now(UTC)
    return schedule


def resume_schedule(session: Session, *, tenant_id: uuid.UUID, id: uuid.UUID) -> Schedule:
    """Run it again from the next time it fires after now: runs missed while paused are not made up.
    Its count of consecutive failed runs starts again from zero (`last_error` stays on record)."""
    schedule = get_schedule(session, tenant_id=tenant_id, id=id, lock=True)
    now = datetime.now(UTC)
    if schedule.paused:
        schedule.paused = False
        schedule.paused_reason = None
        schedule.next_run_at = next_run_after(schedule.cron, schedule.timezone, now)
    schedule.consecutive_failures = 0
    schedule.updated_at = now
    return schedule
