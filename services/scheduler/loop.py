"""The scheduler's loop: a few idempotent jobs, each in its own transaction, run every tick.

Several replicas may run side by side: every job locks the rows it takes with SKIP LOCKED.
"""

import logging
import threading
from collections.abc import Callable

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from pulse.db import transaction
from pulse.delivery.service import recover_expired_claims
from pulse.observability.metrics import OUTBOX_LAG
from pulse.outbox.service import oldest_pending_age_seconds, sweep_outbox
from services.scheduler.settings import SchedulerSettings

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(
        self, settings: SchedulerSettings, session_factory: sessionmaker[Session], celery: Celery
    ) -> None:
        self._settings = settings
        self._session_factory = session_factory
        self._celery = celery
        self._stopping = threading.Event()

    def jobs(self) -> list[tuple[str, Callable[[Session], object]]]:
        batch = self._settings.batch_size
        return [
            ("recover expired claims", lambda session: recover_expired_claims(session, batch_size=batch)),
            ("sweep outbox", lambda session: sweep_outbox(session, self._celery, batch_size=batch)),
            ("measure outbox lag", lambda session: OUTBOX_LAG.set(oldest_pending_age_seconds(session))),
        ]

    def run_once(self) -> None:
        for name, job in self.jobs():
            try:
                with transaction(self._session_factory) as session:
                    job(session)
            except Exception:
                log.exception("job %r failed; retrying next tick", name)

    def run_forever(self) -> None:
        while not self._stopping.is_set():
            self.run_once()
            self._stopping.wait(self._settings.tick_seconds)

    def stop(self) -> None:
        self._stopping.set()
