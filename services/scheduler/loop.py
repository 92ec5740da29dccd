"""The scheduler's loop: a few idempotent jobs, each in its own transaction, each on its own period.

Several replicas may run side by side: every job locks the rows it takes with SKIP LOCKED (the
dead-letter reconciliation holds the messages it inspects unacknowledged, which has the same effect).
Topic sends are fanned out beside the loop, by processes of their own (services/scheduler/fanouts.py).
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from pulse.audit.service import delete_old_entries
from pulse.db import transaction
from pulse.dead_letters.queue import reconcile_dead_letter_queues
from pulse.delivery.rates import IDLE_BUCKET_SECONDS, delete_idle_buckets
from pulse.delivery.recovery import recover_expired_claims, recover_overdue_retries, requeue_stuck_queued
from pulse.digests.service import close_due_digests
from pulse.inapp.escalation import escalate_due
from pulse.messaging.depths import queue_depths
from pulse.messaging.publisher import ConfirmedPublisher
from pulse.messaging.topology import dead_letter_queue
from pulse.notifications.release import release_due_notifications
from pulse.notifications.retention import delete_expired
from pulse.observability.metrics import DEAD_LETTERS, OUTBOX_LAG, QUEUE_LENGTH
from pulse.outbox.service import AfterCommitPublisher, oldest_pending_age_seconds, sweep_outbox
from pulse.rate_limits.service import MAX_WINDOW_SECONDS, delete_stale_counters
from pulse.schedules.runs import run_due_schedules
from pulse.topics.fanout import finish_fanouts
from pulse.vocabulary import Channel
from services.scheduler.fanouts import FanoutProcesses
from services.scheduler.settings import SchedulerSettings

log = logging.getLogger(__name__)


@dataclass
class Job:
    name: str
    every_seconds: float
    run: Callable[[Session], object]
    due_at: float = 0.0


class Scheduler:
    def __init__(
        self, settings: SchedulerSettings, session_factory: sessionmaker[Session], celery: Celery
    ) -> None:
        self._settings = settings
        self._session_factory = session_factory
        self._celery = celery
        self._tick = settings.tick_seconds
        self._stopping = threading.Event()
        # Replays before this scheduler started were handled by its predecessor, or are found by depth.
        self._dead_letters_checked_at = datetime.now(UTC)
        self._reconcile_period = timedelta(seconds=settings.dead_letter_reconcile_seconds)
        self._reconcile_limit = settings.dead_letter_reconcile_batch_size
        batch = settings.batch_size
        # The broker connection of the sweep and of the dead letters recovery publishes, kept open between
        # ticks (jobs run one at a time, in this thread).
        publisher = ConfirmedPublisher(celery, confirm_timeout=settings.broker.confirm_timeout_seconds)
        overdue = timedelta(seconds=settings.retry_overdue_seconds)
        self.jobs = [
            Job(
                "close due digests",
                self._tick,
                lambda s: close_due_digests(
                    s, rules=settings.acceptance, batch_size=settings.digest_batch_size
                ),
            ),
            Job(
                "release due notifications",
                self._tick,
                lambda s: release_due_notifications(s, batch_size=batch),
            ),
            Job(
                "run due schedules",
                self._tick,
                lambda s: run_due_schedules(
                    s,
                    rules=settings.acceptance,
                    pause_after_failures=settings.pause_after_failures,
                    batch_size=batch,
                ),
            ),
            Job(
                "recover expired claims",
                self._tick,
                lambda s: recover_expired_claims(s, publisher, retries=settings.retries, batch_size=batch),
            ),
            Job(
                "recover overdue retries",
                self._tick,
                lambda s: recover_overdue_retries(s, overdue_after=overdue, batch_size=batch),
            ),
            Job(
                "publish stuck queued notifications again",
                settings.stuck_queued_every_seconds,
                lambda s: requeue_stuck_queued(
                    s, older_than=timedelta(seconds=settings.stuck_queued_seconds), batch_size=batch
                ),
            ),
            Job(
                "escalate unread inapp notifications",
                self._tick,
                lambda s: escalate_due(s, rules=settings.acceptance, batch_size=batch),
            ),
            # A runner marks a fan-out done after its last part's chunk; this, for one that died in between.
            Job("finish fan-outs whose parts ended", 10.0, finish_fanouts),
            Job("sweep outbox", self._tick, lambda s: sweep_outbox(s, publisher, batch_size=batch)),
            Job("measure outbox lag", self._tick, lambda s: OUTBOX_LAG.set(oldest_pending_age_seconds(s))),
            Job("measure queues", settings.queue_metrics_seconds, self._measure_queues),
            Job("reconcile dead-letter queues", settings.dead_letter_reconcile_seconds, self._reconcile),
            Job(
                "delete expired notifications",
                settings.retention_every_seconds,
                lambda s: delete_expired(
                    s, keep_for=timedelta(days=settings.retention_days), batch_size=batch
                ),
            ),
            Job(
                "delete old audit log entries",
                settings.retention_every_seconds,
                lambda s: delete_old_entries(
                    s, keep_for=timedelta(days=settings.audit.retention_days), batch_size=batch
                ),
            ),
            Job(
                "forget idle provider send-rate buckets",
                settings.retention_every_seconds,
                lambda s: delete_idle_buckets(s, idle_for_seconds=IDLE_BUCKET_SECONDS),
            ),
            Job(
                "forget old rate-limit counters",
                settings.retention_every_seconds,
                lambda s: delete_stale_counters(s, older_than_seconds=2 * MAX_WINDOW_SECONDS),
            ),
        ]

    def _measure_queues(self, _: Session) -> None:
        with self._celery.connection_for_write() as connection:
            depths = queue_depths(connection)
        for queue, depth in depths.items():
            QUEUE_LENGTH.labels(queue).set(depth)
        for channel in Channel:
            DEAD_LETTERS.labels(channel).set(depths[dead_letter_queue(channel).name])

    def _reconcile(self, session: Session) -> int:
        # Overlapping windows: a replay committed during a pass is seen by the next one.
        started = datetime.now(UTC)
        with self._celery.connection_for_write() as connection:
            pruned = reconcile_dead_letter_queues(
                session,
                connection,
                replayed_since=self._dead_letters_checked_at - self._reconcile_period,
                limit=self._reconcile_limit,
            )
        self._dead_letters_checked_at = started
        return pruned

    def run_once(self) -> None:
        for job in self.jobs:
            now = time.monotonic()
            if now < job.due_at:
                continue
            job.due_at = now + job.every_seconds
            try:
                with transaction(self._session_factory) as session:
                    job.run(session)
            except Exception:
                log.exception("job %r failed; retrying next time", job.name)

    def run_forever(self) -> None:
        settings = self._settings
        publisher = AfterCommitPublisher(
            self._session_factory,
            self._celery,
            confirm_timeout_seconds=settings.broker.confirm_timeout_seconds,
            # A chunk's publishes with one wait for confirms.
            max_group=settings.fanout_chunk_size,
        )
        fanouts = FanoutProcesses(settings, publisher)
        while not self._stopping.is_set():
            self.run_once()
            fanouts.keep_running()
            self._stopping.wait(self._tick)
        fanouts.stop()
        publisher.close()

    def stop(self) -> None:
        self._stopping.set()
