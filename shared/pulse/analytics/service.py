"""One tenant's delivery statistics, computed by PostgreSQL in a few aggregate queries.

The per-channel figures cover the notifications *created* in the window (a range scan of
`ix_notifications_tenant_created`); throughput counts events by the minute they happened in.
"""

import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kombu import Connection
from kombu.exceptions import OperationalError
from sqlalchemy import ColumnElement, Float, and_, cast, extract, func, select
from sqlalchemy.orm import Session

from pulse.analytics.schemas import AnalyticsSummary, ChannelSummary, FailureReason, ThroughputMinute
from pulse.db.models import notifications_table as _notification
from pulse.errors import InvalidInput
from pulse.messaging.depths import queue_depths
from pulse.vocabulary import Channel, Status

log = logging.getLogger(__name__)

DEFAULT_WINDOW = timedelta(hours=24)
MAX_WINDOW = timedelta(days=31)
THROUGHPUT_MINUTES = 60
TOP_FAILURE_REASONS = 5
UNKNOWN_REASON = "unknown"

# An in-app notification that was read had been delivered first.
_DELIVERED = (Status.DELIVERED, Status.READ)


@dataclass(frozen=True)
class Window:
    """[since, until), both in UTC."""

    since: datetime
    until: datetime


def resolve_window(*, since: datetime | None, until: datetime | None, now: datetime) -> Window:
    """The window asked for: naive instants are UTC, `until` defaults to now and `since` to 24 h before
    `until`. Refuses a reversed window or one longer than MAX_WINDOW."""
    end = _utc(until) if until is not None else now.astimezone(UTC)
    start = _utc(since) if since is not None else end - DEFAULT_WINDOW
    if start > end:
        raise InvalidInput(
            f"`since` ({start.isoformat()}) is after `until` ({end.isoformat()})", location=("query", "since")
        )
    if end - start > MAX_WINDOW:
        raise InvalidInput(
            f"the window from `since` to `until` may span at most {MAX_WINDOW.days} days",
            location=("query", "since"),
        )
    return Window(since=start, until=end)


def summarize(
    session: Session, *, tenant_id: uuid.UUID, window: Window, queues: dict[str, int] | None
) -> AnalyticsSummary:
    """The tenant's analytics for `window`; `queues` (deployment-wide) is passed through as read."""
    return AnalyticsSummary(
        since=window.since,
        until=window.until,
        channels=channel_summaries(session, tenant_id=tenant_id, window=window),
        throughput=throughput(session, tenant_id=tenant_id, until=window.until),
        queues=queues,
    )


def channel_summaries(session: Session, *, tenant_id: uuid.UUID, window: Window) -> dict[str, ChannelSummary]:
    """Per channel, over the tenant's notifications created in the window; channels with none are left out."""
    n = _notification
    created_in_window = and_(
        n.c.tenant_id == tenant_id, n.c.created_at >= window.since, n.c.created_at < window.until
    )

    by_status: dict[str, dict[str, int]] = defaultdict(dict)
    for channel, status, count in session.execute(
        select(n.c.channel, n.c.status, func.count())
        .where(created_in_window)
        .group_by(n.c.channel, n.c.status)
        .order_by(n.c.channel, n.c.status)
    ):
        by_status[channel][status] = count

    delivered = n.c.status.in_(_DELIVERED)
    timed_delivery = and_(delivered, n.c.delivered_at.is_not(None))
    finished = n.c.status.in_([*_DELIVERED, Status.FAILED])
    delivery_seconds = cast(extract("epoch", n.c.delivered_at - n.c.created_at), Float)
    figures = {
        row.channel: row
        for row in session.execute(
            select(
                n.c.channel,
                func.count().filter(delivered).label("delivered"),
                func.count().filter(n.c.status == Status.FAILED).label("failed"),
                func.avg(delivery_seconds).filter(timed_delivery).label("avg_delivery"),
                func.percentile_cont(0.95)
                .within_group(delivery_seconds)
                .filter(timed_delivery)
                .label("p95_delivery"),
                cast(func.avg(n.c.attempt_count).filter(finished), Float).label("avg_attempts"),
                func.count().filter(n.c.attempt_count > 1).label("retried"),
                func.count().filter(n.c.status == Status.READ).label("read"),
            )
            .where(created_in_window)
            .group_by(n.c.channel)
        )
    }

    reason = func.coalesce(n.c.last_error, UNKNOWN_REASON)
    ranked = (
        select(
            n.c.channel,
            reason.label("reason"),
            func.count().label("count"),
            func.row_number()
            .over(partition_by=n.c.channel, order_by=(func.count().desc(), reason))
            .label("rank"),
        )
        .where(created_in_window, n.c.status == Status.FAILED)
        .group_by(n.c.channel, reason)
        .subquery()
    )
    reasons: dict[str, list[FailureReason]] = defaultdict(list)
    for channel, text, count in session.execute(
        select(ranked.c.channel, ranked.c.reason, ranked.c.count)
        .where(ranked.c.rank <= TOP_FAILURE_REASONS)
        .order_by(ranked.c.channel, ranked.c.rank)
    ):
        reasons[channel].append(FailureReason(reason=text, count=count))

    summaries = {}
    for channel, statuses in by_status.items():
        row = figures[channel]
        outcomes = row.delivered + row.failed
        summaries[channel] = ChannelSummary(
            total=sum(statuses.values()),
            by_status=statuses,
            delivery_rate=row.delivered / outcomes if outcomes else None,
            avg_delivery_seconds=row.avg_delivery,
            p95_delivery_seconds=row.p95_delivery,
            avg_attempts=row.avg_attempts,
            retried=row.retried,
            read=row.read,
            read_rate=row.read / row.delivered if channel == Channel.INAPP and row.delivered else None,
            top_failure_reasons=reasons[channel],
        )
    return summaries


def throughput(session: Session, *, tenant_id: uuid.UUID, until: datetime) -> list[ThroughputMinute]:
    """Accepted, delivered and failed notifications per minute, for the THROUGHPUT_MINUTES minutes
    before `until` (the last being the minute `until` falls in, unless `until` starts a minute)."""
    n = _notification
    last = _start_of_minute(until - timedelta(microseconds=1))
    first = last - timedelta(minutes=THROUGHPUT_MINUTES - 1)
    series = func.generate_series(first, last, timedelta(minutes=1)).table_valued("minute").render_derived()

    def per_minute(moment: Any, *conditions: ColumnElement[bool]) -> Any:
        minute = func.date_trunc("minute", moment)
        return (
            select(minute.label("minute"), func.count().label("count"))
            .where(n.c.tenant_id == tenant_id, moment >= first, moment < until, *conditions)
            .group_by(minute)
            .subquery()
        )

    # Delivering or failing a notification sets its updated_at to the same instant, and nothing sets it
    # back: bounding updated_at lets PostgreSQL use ix_notifications_tenant_finished_updated, reading only
    # this tenant's recent rows (delivered_at and failed_at are not indexed for this).
    recently_finished = n.c.updated_at >= first
    accepted = per_minute(n.c.created_at)
    delivered = per_minute(n.c.delivered_at, n.c.status.in_(_DELIVERED), recently_finished)
    failed = per_minute(n.c.failed_at, n.c.status == Status.FAILED, recently_finished)
    rows = session.execute(
        select(
            series.c.minute,
            func.coalesce(accepted.c.count, 0),
            func.coalesce(delivered.c.count, 0),
            func.coalesce(failed.c.count, 0),
        )
        .select_from(
            series.outerjoin(accepted, accepted.c.minute == series.c.minute)
            .outerjoin(delivered, delivered.c.minute == series.c.minute)
            .outerjoin(failed, failed.c.minute == series.c.minute)
        )
        .order_by(series.c.minute)
    )
    return [
        ThroughputMinute(minute=minute.astimezone(UTC), accepted=a, delivered=d, failed=f)
        for minute, a, d, f in rows
    ]


def queue_depths_or_none(connection: Connection, *, connect_timeout: float) -> dict[str, int] | None:
    """Messages ready in each Pulse queue, or None when the broker cannot be reached (or lacks a queue):
    one quick connection attempt, so that a broker outage does not stall the caller."""
    try:
        connection.ensure_connection(max_retries=0, timeout=connect_timeout)
        return queue_depths(connection)
    except (OperationalError, *connection.connection_errors, *connection.channel_errors) as error:
        log.warning("queue depths unavailable: %s: %s", type(error).__name__, error)
        return None


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _start_of_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)
