"""Publishing outbox rows: right after commit (the gateway's fast path) and by the scheduler's sweep."""

import logging
import time
import uuid
from datetime import UTC, datetime

from celery import Celery
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from pulse.db import transaction
from pulse.db.models import OutboxMessage
from pulse.messaging.publisher import publish_notification
from pulse.observability import metrics

log = logging.getLogger(__name__)


class AfterCommitPublisher:
    """Publishes an outbox row right after its transaction committed (the fast path).

    When the broker fails, the row simply stays for the sweep, and the publisher stands back for
    `backoff_seconds` so that an outage does not add a connect timeout to every request.
    """

    def __init__(
        self, session_factory: sessionmaker[Session], app: Celery, *, backoff_seconds: float = 5.0
    ) -> None:
        self._session_factory = session_factory
        self._app = app
        self._backoff_seconds = backoff_seconds
        self._standing_back_until = 0.0

    def publish(self, *, outbox_id: int, notification_id: uuid.UUID, routing_key: str) -> bool:
        """True once the broker confirmed and the row is gone; False if it is left to the sweep."""
        if time.monotonic() < self._standing_back_until:
            return False
        try:
            publish_notification(self._app, notification_id, routing_key)
        except Exception as error:  # noqa: BLE001 - whatever broke, the sweep repairs it.
            self._standing_back_until = time.monotonic() + self._backoff_seconds
            log.warning("publish left to the outbox sweep: %s", error, extra={"notification_id": str(notification_id)})
            return False
        with transaction(self._session_factory) as session:
            session.execute(delete(OutboxMessage).where(OutboxMessage.id == outbox_id))
        return True


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
