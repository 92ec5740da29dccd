"""Publishing outbox rows: right after commit (the gateway's fast path) and by the scheduler's sweep."""

import itertools
import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from sqlalchemy import (
    BigInteger,
    Select,
    any_,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, sessionmaker

from pulse.db import transaction
from pulse.db.models import Notification, OutboxMessage
from pulse.messaging.publisher import ConfirmedPublisher, TaskMessage
from pulse.messaging.topology import routing_key
from pulse.observability import metrics
from pulse.observability.logging import request_id
from pulse.vocabulary import Channel, Priority

log = logging.getLogger(__name__)

# A group's rows, unless the sweep holds them: one statement locks and deletes them (the lock is held
# until commit), instead of a SELECT … FOR UPDATE and a DELETE.
_TAKE_OWED = (
    delete(OutboxMessage)
    .where(
        OutboxMessage.id.in_(
            select(OutboxMessage.id)
            .where(OutboxMessage.id == any_(bindparam("outbox_ids", type_=ARRAY(BigInteger))))
            .with_for_update(skip_locked=True)
        )
    )
    .returning(OutboxMessage.id)
)

_RANKS = {priority: rank for rank, priority in enumerate(Priority)}  # critical first
_URGENT = frozenset({Priority.CRITICAL, Priority.HIGH})


@dataclass(frozen=True)
class OwedPublish:
    """A committed outbox row: publish its notification's task, then delete the row."""

    outbox_id: int
    message: TaskMessage


class AfterCommitPublisher:
    """Publishes outbox rows right after their transaction committed (the gateway's fast path), from a
    thread of its own, so requests never wait for RabbitMQ: whatever requests hand over while the
    thread waits for one round of confirms goes out together in the next (a group commit for
    publishes), and the confirmed rows are deleted in one statement. Waiting publishes go out by
    priority, so a backlog of `low` sends never holds up a `critical` one.

    Nothing depends on this path: a row it does not publish (the broker is down, the process is
    killed) is published by the scheduler's sweep once due. After a failed publish the thread stands
    back for `backoff_seconds`, leaving everything to the sweep, so that an outage costs nothing.
    And when `max_waiting` publishes wait (a burst of batch sends outrunning the broker), further
    `normal` and `low` ones are left to the sweep too, so that a burst cannot grow the gateway's
    memory; `critical` and `high` ones still queue, ahead of the rest. Groups are small
    (`max_group`), so an urgent publish never waits behind a long one.
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        app: Celery,
        *,
        confirm_timeout_seconds: float,
        backoff_seconds: float = 5.0,
        max_group: int = 100,
        max_waiting: int = 20_000,
    ) -> None:
        self._session_factory = session_factory
        self._publisher = ConfirmedPublisher(app, confirm_timeout=confirm_timeout_seconds)
        self._backoff_seconds = backoff_seconds
        self._max_group = max_group
        self._max_waiting = max_waiting
        self._standing_back_until = 0.0
        # (priority rank, arrival, publish); the stop signal (rank -1, no publish) comes before all.
        self._owed: queue.PriorityQueue[tuple[int, int, OwedPublish | None]] = queue.PriorityQueue()
        self._arrivals = itertools.count()
        metrics.PUBLISHES_WAITING.set_function(lambda: self.waiting)
        self._thread = threading.Thread(target=self._publish_owed, name="after-commit-publisher", daemon=True)
        self._thread.start()

    def publish(self, outbox_rows: Sequence[tuple[int, Any]]) -> None:
        """Hand over committed (outbox id, notification) pairs — notifications as rows with `id`,
        `channel` and `priority` — to be published; returns at once."""
        crowded = self.waiting >= self._max_waiting
        current_request = request_id.get()
        for outbox_id, notification in outbox_rows:
            priority = Priority(notification.priority)
            if crowded and priority not in _URGENT:
                continue  # The sweep's; urgent ones always queue (they go out first).
            key = routing_key(Channel(notification.channel), priority)
            owed = OwedPublish(outbox_id, TaskMessage(notification.id, key, current_request))
            self._owed.put((_RANKS[priority], next(self._arrivals), owed))

    @property
    def waiting(self) -> int:
        """Publishes handed over and not yet taken (pulse_publishes_waiting)."""
        return self._owed.qsize()

    @property
    def standing_back(self) -> bool:
        """True after a failed publish, until the back-off is over (readiness reports it)."""
        return time.monotonic() < self._standing_back_until

    def close(self) -> None:
        """Stop after the group being published; what is still waiting is in the outbox, for the sweep."""
        self._owed.put((-1, next(self._arrivals), None))
        self._thread.join(timeout=10)

    def _publish_owed(self) -> None:
        while (first := self._owed.get()[2]) is not None:
            group = [first]
            while len(group) < self._max_group:
                try:
                    _, _, owed = self._owed.get_nowait()
                except queue.Empty:
                    break
                if owed is None:
                    self._owed.put((-1, next(self._arrivals), None))  # Stop after this group.
                    break
                group.append(owed)
            self._publish_group(group)
        self._publisher.close()

    def _publish_group(self, group: list[OwedPublish]) -> None:
        if self.standing_back:
            return
        try:
            with transaction(self._session_factory) as session:
                # The rows are locked as the sweep locks them (SKIP LOCKED), so that a row is published by
                # one of the two: one the sweep took already (this thread fell behind by the publish
                # grace, e.g. a fan-out's thousands) is gone or locked, and skipped here. The same
                # statement deletes them: should the publish or the commit fail, the delete is undone and
                # the sweep publishes them (once more: the worker's claim drops the copy).
                mine = set(session.scalars(_TAKE_OWED, {"outbox_ids": [owed.outbox_id for owed in group]}))
                self._publisher.publish([owed.message for owed in group if owed.outbox_id in mine])
        except Exception as error:  # noqa: BLE001 - whatever broke, the sweep repairs it.
            self._standing_back_until = time.monotonic() + self._backoff_seconds
            log.warning("publish of %d left to the outbox sweep: %s", len(group), error)


def owe_publish(session: Session, notifications: Sequence[Any]) -> None:
    """Record, in the caller's transaction, that these notifications (rows with `id`, `channel` and
    `priority`) are to be published now; the sweep sends them."""
    if notifications:
        session.execute(
            insert(OutboxMessage),
            [
                {
                    "notification_id": row.id,
                    "routing_key": routing_key(Channel(row.channel), Priority(row.priority)),
                }
                for row in notifications
            ],
        )


def owe_publish_for_batch(session: Session, batch: Select[Any], **values: Any) -> int:
    """Set `values` on the notifications `batch` selects (their ids, ordered and limited) and owe their
    publish, in the caller's transaction; returns how many. The batch is locked with SKIP LOCKED, so
    that schedulers running side by side never take the same notification."""
    taken = session.execute(
        update(Notification)
        .where(Notification.id.in_(batch.with_for_update(skip_locked=True).scalar_subquery()))
        .values(**values)
        .returning(Notification.id, Notification.channel, Notification.priority)
    ).all()
    owe_publish(session, taken)
    return len(taken)


def sweep_outbox(session: Session, publisher: ConfirmedPublisher, *, batch_size: int) -> int:
    """Publish due outbox rows and delete them once confirmed. Safe with several sweepers running:
    each locks its batch with SKIP LOCKED. Raises (and rolls back the batch) if the broker fails."""
    rows = session.execute(
        select(OutboxMessage.id, OutboxMessage.notification_id, OutboxMessage.routing_key)
        .where(OutboxMessage.available_at <= func.now())
        .order_by(OutboxMessage.available_at)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    ).all()
    publisher.publish([TaskMessage(row.notification_id, row.routing_key) for row in rows])
    if rows:
        session.execute(delete(OutboxMessage).where(OutboxMessage.id.in_([row.id for row in rows])))
        metrics.OUTBOX_PUBLISHED.inc(len(rows))
    return len(rows)


def oldest_pending_age_seconds(session: Session) -> float:
    oldest = session.scalar(select(func.min(OutboxMessage.created_at)))
    return 0.0 if oldest is None else max(0.0, (datetime.now(UTC) - oldest).total_seconds())
