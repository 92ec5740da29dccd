"""Running due schedules: each run is accepted like a direct send of its tenant, and one schedule's
failing runs are recorded on it (and eventually pause it) without holding back any other schedule.
Callers own the transaction (commit at the edge).
"""

import logging
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from pulse.db.models import Schedule, Tenant
from pulse.errors import InvalidInput, PulseError, RateLimited
from pulse.notifications.acceptance import AcceptanceSettings, screen
from pulse.notifications.schemas import NotificationRequest
from pulse.notifications.service import accept_notification
from pulse.schedules.service import PauseReason, next_run_after

log = logging.getLogger(__name__)

MAX_ERROR_LENGTH = 1000  # characters of `last_error` kept


def run_due_schedules(
    session: Session, *, rules: AcceptanceSettings, pause_after_failures: int, batch_size: int
) -> int:
    """Send one notification for each due schedule; return how many did.

    Catch-up policy: the next run is computed from now, not from the occurrence that fell due, so a
    schedule that missed runs while the scheduler was down runs once (one catch-up run) and then keeps
    its normal rhythm; missed occurrences are never replayed in a burst. (Paused schedules do not run
    at all; resuming one skips what it missed.)

    A run is accepted exactly as a direct send of its tenant would be: screened by `rules` (enabled
    channel, SSRF guard), then `accept_notification` with the tenant's rate limit, quiet hours (the
    tenant's, else the deployment's) and time zone. It happens in a savepoint of its own, so whatever
    one schedule's run raises undoes that run only: the error is logged and recorded on the schedule
    (`last_error`, `last_error_at`) and the rest of the batch still runs. Every outcome moves the
    schedule to its next run, so a failing schedule is tried at its own rhythm, never every tick.
    A failed or refused run counts toward pausing (`pause_after_failures` in a row pause it, with
    `paused_reason` `failures`) and a run that sends resets the count. A rate-limited run is recorded
    and skipped but counts neither way: the limit is about the recipient's traffic, not the schedule.

    Each notification is created in the same transaction as the schedule's update, so a crash between
    the two loses both and the run happens once, later. Several schedulers may run: each locks its
    batch with SKIP LOCKED, so no occurrence runs twice.
    """
    now = datetime.now(UTC)
    due = session.execute(
        select(Schedule, Tenant)
        .join(Tenant, Tenant.id == Schedule.tenant_id)
        .where(Schedule.paused.is_(False), Schedule.next_run_at <= now)
        .order_by(Schedule.next_run_at)
        .limit(batch_size)
        # Only the schedules: locking the tenant rows would make other schedulers skip its other schedules.
        .with_for_update(skip_locked=True, of=Schedule)
    ).all()
    ran = 0
    for schedule, tenant in due:
        try:
            next_run = next_run_after(schedule.cron, schedule.timezone, now)
        except Exception as error:
            # Its cron or zone stopped working (a croniter or tz database change): it cannot move on.
            log.exception("schedule %s of tenant %s has no next run", schedule.id, schedule.tenant_id)
            _record(schedule, error, next_run=None, now=now, pause_after_failures=pause_after_failures)
            continue
        failure = _send_once(session, schedule, tenant, rules=rules)
        _record(schedule, failure, next_run=next_run, now=now, pause_after_failures=pause_after_failures)
        ran += failure is None
    return ran


def _send_once(
    session: Session, schedule: Schedule, tenant: Tenant, *, rules: AcceptanceSettings
) -> Exception | None:
    """Accept this run's notification in a savepoint; return why it did not send (None: it did)."""
    try:
        with session.begin_nested():
            request = NotificationRequest.model_validate(schedule.notification)
            screen(request, rules)
            accept_notification(
                session,
                tenant_id=schedule.tenant_id,
                request=request,
                policy=rules.policy_of(tenant),
                rate=rules.limits_of(tenant),
                schedule_id=schedule.id,
                # The scheduler's outbox sweep publishes it, in the same tick.
                publish_grace=timedelta(0),
            )
    except (ValidationError, PulseError) as error:
        # Refused as a direct send would be: rate limit, deleted template, opted-out user, SSRF guard...
        log.warning("schedule %s of tenant %s did not send: %s", schedule.id, schedule.tenant_id, error)
        return error
    except Exception as error:
        # A bug or a database error in this run: it must not cost the other schedules theirs.
        log.exception("schedule %s of tenant %s failed", schedule.id, schedule.tenant_id)
        return error
    return None


def _record(
    schedule: Schedule,
    failure: Exception | None,
    *,
    next_run: datetime | None,
    now: datetime,
    pause_after_failures: int,
) -> None:
    """The run's outcome on the schedule; `next_run` None means it cannot run again, so it pauses."""
    schedule.updated_at = now
    if failure is None:
        schedule.last_run_at = now
        schedule.run_count += 1
        schedule.consecutive_failures = 0
    else:
        schedule.last_error = _reason(failure)
        schedule.last_error_at = now
        if not isinstance(failure, RateLimited):
            schedule.consecutive_failures += 1
    if next_run is not None:
        schedule.next_run_at = next_run
    if next_run is None or schedule.consecutive_failures >= pause_after_failures:
        schedule.paused = True
        schedule.paused_reason = PauseReason.FAILURES


def _reason(error: Exception) -> str:
    """What a tenant may read about a failed run (`last_error`): no internals of unexpected errors."""
    if isinstance(error, ValidationError):
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'notification'}: {e['msg']}" for e in error.errors()
        )
        reason = f"the stored notification is no longer valid: {problems}"
    elif isinstance(error, InvalidInput) and error.location:
        reason = f"{error.location[-1]}: {error}"
    elif isinstance(error, PulseError):
        reason = str(error)
    else:
        reason = f"internal error ({type(error).__name__}); the scheduler's log has the details"
    return reason[:MAX_ERROR_LENGTH]
