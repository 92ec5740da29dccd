"""The Celery side of a channel worker service: one `pulse.<channel>.send` task per channel.

Every channel worker has the same shape (claim, send, record; then ack, retry later or dead-letter);
only the provider differs, so the service modules just pick channels and a provider and call
`make_channel_worker`.
"""

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from pulse.db import make_engine, make_session_factory
from pulse.delivery.circuit import BreakerSettings, ProviderChain
from pulse.delivery.providers import Provider
from pulse.delivery.retry import RetrySettings
from pulse.delivery.service import Outcome, deliver
from pulse.messaging.celery_app import make_celery
from pulse.messaging.topology import task_name, work_queue, work_queues
from pulse.observability.logging import request_id
from pulse.observability.metrics import serve_metrics
from pulse.settings import BrokerSettings, DatabaseSettings
from pulse.vocabulary import Channel, Priority

log = logging.getLogger(__name__)

# While PostgreSQL is unreachable a message comes back after this long (then twice as long, up
# to the cap): the notification is safe in the database, only its attempt waits.
DATABASE_BACKOFF_SECONDS = 2
DATABASE_BACKOFF_CAP_SECONDS = 60


@dataclass(frozen=True)
class _ChannelDelivery:
    session_factory: sessionmaker[Session]
    providers: ProviderChain
    claim_lease: timedelta
    retries: RetrySettings

    def run(self, task: Task, notification_id: str, channel: Channel) -> str:
        """Deliver; then acknowledge, send again later (retry, database down) or dead-letter."""
        try:
            result = deliver(
                self.session_factory,
                notification_id=uuid.UUID(notification_id),
                channel=channel,
                providers=self.providers,
                lease=self.claim_lease,
                retries=self.retries,
            )
        except (DBAPIError, PoolTimeoutError) as error:
            backoff = min(DATABASE_BACKOFF_CAP_SECONDS, DATABASE_BACKOFF_SECONDS * 2**task.request.retries)
            log.warning("database unavailable, trying again in %ss: %s", backoff, error)
            _send_later(task, notification_id, channel, backoff, retries=task.request.retries + 1)
            return "postponed"
        if result.outcome in (Outcome.RETRYING, Outcome.POSTPONED):
            assert result.retry_in_seconds is not None
            _send_later(task, notification_id, channel, result.retry_in_seconds)
        elif result.outcome is Outcome.FAILED:
            # Rejected without requeue: RabbitMQ moves the message to pulse.<channel>.dead.
            raise Reject(result.error, requeue=False)
        return result.outcome


class ChannelWorkerSettings(BaseSettings):
    """What every channel worker service is configured with; each service sets its env prefix
    (PULSE_<CHANNEL>_WORKER_), its metrics port and adds its provider's settings block."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database: DatabaseSettings = Field(default_factory=DatabaseSettings, description="PostgreSQL.")
    broker: BrokerSettings = Field(default_factory=BrokerSettings, description="RabbitMQ.")
    retries: RetrySettings = Field(default_factory=RetrySettings, description="Retry plans per priority.")
    concurrency: int = Field(16, description="Threads sending in parallel.")
    prefetch_multiplier: int = Field(4, description="Messages reserved per thread ahead of time.")
    claim_lease_seconds: int = Field(
        60, description="How long a send may take before another worker may claim the notification."
    )
    circuit_failures: int = Field(
        5, description="Consecutive transient failures that open a provider's circuit."
    )
    circuit_failure_rate: float = Field(0.5, description="Failure share of the last 20 sends that opens it.")
    circuit_cooldown_seconds: float = Field(
        30.0, description="How long an open circuit waits before a probe."
    )
    metrics_host: str = Field("0.0.0.0", description="Interface of the /metrics endpoint.")
    metrics_port: int = Field(description="Port of the /metrics endpoint.")


def make_channel_worker(
    name: str, *, channels: list[Channel], providers: list[Provider], settings: ChannelWorkerSettings
) -> Celery:
    """The Celery app of a channel worker: `providers` in order of preference, each behind a breaker."""
    chain = ProviderChain(
        providers,
        BreakerSettings(
            failure_threshold=settings.circuit_failures,
            failure_rate=settings.circuit_failure_rate,
            cooldown_seconds=settings.circuit_cooldown_seconds,
        ),
    )
    # One connection per sending thread.
    database = settings.database.model_copy(update={"pool_size": settings.concurrency})
    session_factory = make_session_factory(make_engine(database))
    claim_lease = timedelta(seconds=settings.claim_lease_seconds)
    broker, retries = settings.broker, settings.retries
    app = make_celery(name, broker, queues=work_queues(*channels))
    delivery = _ChannelDelivery(session_factory, chain, claim_lease, retries)

    for channel in channels:

        @app.task(name=task_name(channel), bind=True)
        def send(self: Task, notification_id: str, channel: Channel = channel) -> str:
            # The id of the HTTP request that accepted it, for this task's log lines.
            token = request_id.set(getattr(self.request, "request_id", None))
            try:
                return delivery.run(self, notification_id, channel)
            finally:
                request_id.reset(token)

    return app


def _send_later(
    task: Task,
    notification_id: str,
    channel: Channel,
    delay_seconds: int,
    *,
    retries: int = 0,
) -> None:
    """Publish this notification's task again through RabbitMQ's delayed delivery (nothing waits in
    worker memory); the current message is then acknowledged. If that publish fails, the current
    message goes back to its queue instead; should an accepted publish be lost later, the scheduler
    re-publishes the overdue retry (pulse.delivery.recovery)."""
    try:
        _publish_later(task, notification_id, channel, delay_seconds, retries=retries)
    except Exception as error:
        log.warning("could not schedule the next try (%s); the message goes back to its queue", error)
        raise Reject(str(error), requeue=True) from error


def _publish_later(
    task: Task,
    notification_id: str,
    channel: Channel,
    delay_seconds: int,
    *,
    retries: int,
) -> None:
    task.app.send_task(
        task.name,
        args=[notification_id],
        countdown=delay_seconds,
        queue=work_queue(channel, _priority_of(task.request.delivery_info)),
        retries=retries,
        headers={"request_id": request_id.get()},
    )


def _priority_of(delivery_info: dict[str, Any] | None) -> Priority:
    # The routing key ends in <channel>.<priority>, after any delayed-delivery prefix.
    routing_key = (delivery_info or {}).get("routing_key") or ""
    try:
        return Priority(routing_key.rsplit(".", 1)[-1])
    except ValueError:
        return Priority.NORMAL


def run_worker(app: Celery, *, hostname: str, settings: ChannelWorkerSettings) -> None:
    """Serve its metrics and run a channel worker in this process until SIGTERM/SIGINT (warm
    shutdown: in-flight tasks finish)."""
    serve_metrics(settings.metrics_port, settings.metrics_host)
    # One line per received and per finished task is too much at hundreds of tasks per second;
    # Pulse logs what matters (failures, retries, skips) itself.
    for noisy in ("celery.app.trace", "celery.worker.strategy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    app.worker_main(
        [
            "--quiet",  # No banner: every line the worker prints is a JSON event.
            "worker",
            # Delivery is I/O (database, provider): threads overlap the waits, and one process keeps
            # one set of Prometheus metrics.
            "--pool=threads",
            f"--concurrency={settings.concurrency}",
            f"--prefetch-multiplier={settings.prefetch_multiplier}",
            f"--hostname={hostname}",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
        ]
    )
