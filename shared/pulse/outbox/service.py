"""Publishing outbox rows: right after commit (the gateway's fast path) and by the scheduler's sweep."""

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from pulse.db import transaction
from pulse.db.models import OutboxMessage
from pulse.messaging.publisher import publish_notification, publish_notifications
from pulse.messaging.topology import routing_key
from pulse.observability import metrics
from pulse.vocabulary import Channel, Priority

log = logging.getLogger(__name__)


class AfterCommitPublisher:
    """Publishes an outbox row right after its transaction committed (the fast path).

    Confirmed rows are deleted in batches by a background thread, which saves every request a
    transaction; a row whose deletion was lost to a crash is published once more by the sweep, and
    the worker's claim makes that second copy harmless. When the broker fails, the row simply stays
    for the sweep, and the publisher stands back for `backoff_seconds` so that an outage does not
    add a connect timeout to every request.
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        app: Celery,
        *,
        backoff_seconds: float = 5.0,
        delete_interval_seconds: float = 0.05,
    ) -> None:
        self._session_factory = session_factory
        self._app = app
        self._backoff_seconds = backoff_seconds
        self._standing_back_until = 0.0
        self._published: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._delete_interval = delete_interval_seconds
        self._stopping = threading.Event()
        self._deleter = threading.Thread(target=self._delete_published, name="outbox-deleter", daemon=True)
        self._deleter.start()

    def publish(self, *, outbox_id: int, notification_id: uuid.UUID, routing_key: str) -> bool:
        """True once the broker confirmed; False if the row is left to the sweep."""
        return self._attempt(
            lambda: publish_notification(self._app, notification_id, routing_key),
            [outbox_id],
            context={"notification_id": str(notification_id)},
        )

    def publish_many(self, messages: Sequence[tuple[int, uuid.UUID, str]]) -> bool:
        """`publish` for many (outbox id, notification id, routing key), confirmed all at once."""
        return self._attempt(
            lambda: publish_notifications(self._app, [(id, key) for _, id, key in messages]),
            [outbox_id for outbox_id, _, _ in messages],
            context={"messages": len(messages)},
        )

    def _attempt(
        self, publish: Callable[[], None], outbox_ids: list[int], *, context: dict[str, Any]
    ) -> bool:
        if time.monotonic() < self._standing_back_until:
            return False
        try:
            publish()
        except Exception as error:  # noqa: BLE001 - whatever broke, the sweep repairs it.
            self._standing_back_until = time.monotonic() + self._backoff_seconds
            log.warning("publish left to the outbox sweep: %s", error, extra=context)
            return False
        for outbox_id in outbox_ids:
            self._published.put(outbox_id)
        return True

    def close(self) -> None:
        """Stop the deleter after a last batch."""
        self._stopping.set()
        self._deleter.join(timeout=5)

    def _delete_published(self) -> None:
        while not self._stopping.wait(self._delete_interval):
            self._delete_batch()
        self._delete_batch()

    def _delete_batch(self) -> None:
        ids = []
        while not self._published.empty():
            ids.append(self._published.get_nowait())
        if not ids:
            return
        try:
            with transaction(self._session_factory) as session:
                session.execute(delete(OutboxMessage).where(OutboxMessage.id.in_(ids)))
        except Exception:
            log.exception("could not delete %d published outbox rows", len(ids))


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


def sweep_outbox(session: Session, app: Celery, *, batch_size: int) -> int:
    """Publish due outbox rows and delete them once confirmed. Safe with several sweepers running:
    each locks its batch with SKIP LOCKED. Raises (and rolls back the batch) if the broker fails."""
    rows = session.execute(
        select(OutboxMessage.id, OutboxMessage.notification_id, OutboxMessage.routing_key)
        .where(OutboxMessage.available_at <= func.now())
        .order_by(OutboxMessage.available_at)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    ).all()
    for row in rows:
        publish_notification(app, row.notification_id, row.routing_key)
    if rows:
        session.execute(delete(OutboxMessage).where(OutboxMessage.id.in_([row.id for row in rows])))
        metrics.OUTBOX_PUBLISHED.inc(len(rows))
    return len(rows)


def oldest_pending_age_seconds(session: Session) -> float:
    oldest = session.scalar(select(func.min(OutboxMessage.created_at)))
    return 0.0 if oldest is None else max(0.0, (datetime.now(UTC) - oldest).total_seconds())
