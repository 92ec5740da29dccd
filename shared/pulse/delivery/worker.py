"""The Celery side of a channel worker service: one `pulse.<channel>.send` task per channel.

Every channel worker has the same shape (claim, send, record, ack or dead-letter); only the provider
differs, so the service modules just pick channels and a provider and call `make_channel_worker`.
"""

import logging
import uuid
from datetime import timedelta

from celery import Celery
from celery.exceptions import Reject
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from pulse.delivery.service import Outcome, Provider, deliver
from pulse.messaging.celery_app import make_celery
from pulse.messaging.topology import task_name, work_queues
from pulse.settings import BrokerSettings
from pulse.vocabulary import Channel

# While the database is unreachable, tasks come back later through RabbitMQ (delayed delivery)
# rather than failing: the notification is safe in PostgreSQL, only this attempt is postponed.
_DATABASE_UNAVAILABLE = (DBAPIError, PoolTimeoutError)


def make_channel_worker(
    name: str,
    *,
    channels: list[Channel],
    provider: Provider,
    broker: BrokerSettings,
    session_factory: sessionmaker[Session],
    claim_lease: timedelta,
) -> Celery:
    app = make_celery(name, broker, queues=work_queues(*channels))

    for channel in channels:

        @app.task(
            name=task_name(channel),
            bind=True,
            autoretry_for=_DATABASE_UNAVAILABLE,
            retry_backoff=2,
            retry_backoff_max=60,
            max_retries=None,
        )
        def send(self: object, notification_id: str, channel: Channel = channel) -> str:
            result = deliver(
                session_factory,
                notification_id=uuid.UUID(notification_id),
                channel=channel,
                provider=provider,
                lease=claim_lease,
            )
            if result.outcome is Outcome.FAILED:
                # Rejected without requeue: RabbitMQ moves the message to pulse.<channel>.dead.
                raise Reject(result.error, requeue=False)
            return result.outcome

    return app


def run_worker(app: Celery, *, hostname: str, concurrency: int, prefetch_multiplier: int) -> None:
    """Run a channel worker in this process until SIGTERM/SIGINT (warm shutdown: in-flight tasks finish)."""
    # One line per received and per finished task is too much at hundreds of tasks per second;
    # Pulse logs what matters (failures, skips) itself.
    for noisy in ("celery.app.trace", "celery.worker.strategy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    app.worker_main(
        [
            "worker",
            # Delivery is I/O (database, provider): threads overlap the waits, and one process keeps
            # one set of Prometheus metrics.
            "--pool=threads",
            f"--concurrency={concurrency}",
            f"--prefetch-multiplier={prefetch_multiplier}",
            f"--hostname={hostname}",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
        ]
    )
