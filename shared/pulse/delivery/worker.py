"""The Celery side of a channel worker service: one `pulse.<channel>.send` task per channel.

Every channel worker has the same shape (claim, send, record; then ack, retry later or dead-letter);
only the provider differs, so the service modules just pick channels and a provider and call
`make_channel_worker`. Messages are taken in batches (celery-batches): a batch is claimed and recorded
in one transaction each, and its sends run in parallel on a pool of sender threads.
"""

import logging
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Annotated, Any

from celery import Celery, Task
from celery.worker.request import Request
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from pulse.db import make_engine, make_session_factory
from pulse.delivery.circuit import BreakerSettings, ProviderChain
from pulse.delivery.providers import Provider
from pulse.delivery.rates import SendRates
from pulse.delivery.retry import RetrySettings
from pulse.delivery.service import DeliveryResult, Outcome, deliver
from pulse.messaging.celery_app import make_celery
from pulse.messaging.topology import priority_of, task_name, work_queue
from pulse.observability.metrics import serve_metrics
from pulse.send_rate import SendRate
from pulse.settings import BrokerSettings, DatabaseSettings, split_commas
from pulse.vocabulary import Channel, Priority

log = logging.getLogger(__name__)

# While PostgreSQL is unreachable a message comes back after this long (then twice as long, up
# to the cap): the notification is safe in the database, only its attempt waits.
DATABASE_BACKOFF_SECONDS = 2
DATABASE_BACKOFF_CAP_SECONDS = 60


class Settle(Enum):
    """What becomes of a message once its notification's attempt is over."""

    ACK = "ack"  # Done (delivered, skipped, or sent again later through delayed delivery).
    DEAD_LETTER = "dead_letter"  # Rejected without requeue: RabbitMQ moves it to pulse.<channel>.dead.
    REQUEUE = "requeue"  # Back to its queue (nothing was decided about it).


class DeliveryBatches(Batches):
    """celery-batches' task base: messages are buffered and handed to the task as one list; each
    message is then settled by its own notification's outcome, after the task recorded it (never
    before: a worker killed mid-batch leaves every message of the batch to be delivered again)."""

    def flush(self, requests: list[Request]) -> Any:
        def settle(outcomes: list[Settle] | None) -> None:
            # None: the task raised; its messages go back to the queue (a claimed notification's
            # second copy is skipped, and the scheduler recovers its claim once the lease expires).
            for request, outcome in zip(requests, outcomes or [Settle.REQUEUE] * len(requests), strict=True):
                if outcome is Settle.ACK:
                    request.acknowledge()
                else:
                    request.reject(requeue=outcome is Settle.REQUEUE)

        batch = [SimpleRequest.from_request(request) for request in requests]
        return self._pool.apply_async(apply_batches_task, (self, (batch,), 0, None), callback=settle)


# Told the ids of a batch's notifications once their delivery is committed (the inapp worker pushes
# them to the realtime processes then, so that nobody sees a notification before its row says so).
AfterDelivery = Callable[[list[uuid.UUID]], None]


@dataclass(frozen=True)
class _ChannelDelivery:
    session_factory: sessionmaker[Session]
    providers: ProviderChain
    claim_lease: timedelta
    retries: RetrySettings
    senders: Executor
    rates: SendRates
    after_delivery: AfterDelivery | None = None

    def run(self, task: Task, requests: list[SimpleRequest], channel: Channel) -> list[Settle]:
        """Deliver a batch; then settle each message: acknowledge, send again later (retry, database
        down) or dead-letter."""
        messages = [_Message.read(request) for request in requests]
        valid = [message for message in messages if message is not None]
        if len(valid) < len(requests):
            log.warning(
                "dead-lettered %d messages without a notification id or a work queue's routing key",
                len(requests) - len(valid),
            )
        try:
            results = deliver(
                self.session_factory,
                notification_ids=[message.notification_id for message in valid],
                channel=channel,
                providers=self.providers,
                lease=self.claim_lease,
                retries=self.retries,
                senders=self.senders,
                request_ids={message.notification_id: _request_id(message.request) for message in valid},
                rates=self.rates,
            )
        except (DBAPIError, PoolTimeoutError) as error:
            log.warning("database unavailable, trying the batch again later: %s", error)
            settled = iter([_postpone(task, message, channel) for message in valid])
        else:
            self._announce(
                [
                    message.notification_id
                    for message, result in zip(valid, results, strict=True)
                    if result.outcome is Outcome.DELIVERED
                ]
            )
            settled = iter(
                [
                    self._settle(task, message, channel, result)
                    for message, result in zip(valid, results, strict=True)
                ]
            )
        return [Settle.DEAD_LETTER if message is None else next(settled) for message in messages]

    def _announce(self, delivered: list[uuid.UUID]) -> None:
        if not delivered or self.after_delivery is None:
            return
        try:
            self.after_delivery(delivered)
        except Exception:  # The deliveries are committed; only their announcement is lost.
            log.exception("could not announce %d delivered notifications", len(delivered))

    def _settle(self, task: Task, message: "_Message", channel: Channel, result: DeliveryResult) -> Settle:
        if result.outcome in (Outcome.RETRYING, Outcome.POSTPONED):
            assert result.retry_in_seconds is not None
            return _send_later(task, message, channel, result.retry_in_seconds, retries=0)
        if result.outcome is Outcome.FAILED:
            return Settle.DEAD_LETTER
        return Settle.ACK


class ChannelWorkerSettings(BaseSettings):
    """What every channel worker service is configured with; each service sets its env prefix
    (PULSE_<CHANNEL>_WORKER_), its metrics port and adds its provider's settings block."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database: DatabaseSettings = Field(default_factory=DatabaseSettings, description="PostgreSQL.")
    broker: BrokerSettings = Field(default_factory=BrokerSettings, description="RabbitMQ.")
    retries: RetrySettings = Field(default_factory=RetrySettings, description="Retry plans per priority.")
    priorities: Annotated[list[Priority], NoDecode] = Field(
        default=list(Priority),
        min_length=1,
        description="The priorities whose queues this worker consumes (comma-separated). Run one worker "
        "for `critical,high` and one for `normal,low` to give urgent sends capacity that a backlog of "
        "ordinary ones cannot take.",
    )
    concurrency: int = Field(16, ge=1, description="Sends in flight at once (threads talking to providers).")
    batch_size: int = Field(
        32, ge=1, le=1000, description="Messages claimed and recorded together, in one transaction each."
    )
    batch_interval_seconds: float = Field(
        0.02, gt=0, le=5, description="How long a message may wait for its batch to fill up."
    )
    batches_in_flight: int = Field(
        4, ge=1, description="Batches being delivered at once (each holds a database connection)."
    )
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
    rate_limit_wait_seconds: float = Field(
        5.0,
        ge=0,
        description="How far ahead a batch may book its providers' send-rate tokens and wait for them "
        "(at most half the claim lease); sends without a token by then are put back.",
    )
    metrics_host: str = Field("0.0.0.0", description="Interface of the /metrics endpoint.")
    metrics_port: int = Field(description="Port of the /metrics endpoint.")

    @field_validator("priorities", mode="before")
    @classmethod
    def _split_priorities(cls, value: object) -> object:
        return split_commas(value)

    def node_name(self, service: str) -> str:
        """The Celery node name: `email@<host>`, or `email-critical-high@<host>` for some priorities."""
        if set(self.priorities) == set(Priority):
            return f"{service}@%h"
        return f"{'-'.join([service, *self.priorities])}@%h"


def make_channel_worker(
    name: str,
    *,
    channels: list[Channel],
    providers: list[Provider],
    settings: ChannelWorkerSettings,
    rate_limits: Mapping[str, SendRate | None] | None = None,
    after_delivery: AfterDelivery | None = None,
) -> Celery:
    """The Celery app of a channel worker: `providers` in order of preference, each behind a breaker
    and, where `rate_limits` has one for its name, within its send-rate limit; `after_delivery`, if
    given, is told each batch's delivered notifications once they are committed."""
    chain = ProviderChain(
        providers,
        BreakerSettings(
            failure_threshold=settings.circuit_failures,
            failure_rate=settings.circuit_failure_rate,
            cooldown_seconds=settings.circuit_cooldown_seconds,
        ),
    )
    # One connection per batch in flight.
    database = settings.database.model_copy(update={"pool_size": settings.batches_in_flight})
    session_factory = make_session_factory(make_engine(database))
    claim_lease = timedelta(seconds=settings.claim_lease_seconds)
    queues = [work_queue(channel, priority) for channel in channels for priority in settings.priorities]
    app = make_celery(name, settings.broker, queues=queues)
    senders = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="sender")
    # Waiting for tokens must leave the sends time within their claim's lease.
    max_wait = min(settings.rate_limit_wait_seconds, settings.claim_lease_seconds / 2)
    rates = SendRates(rate_limits or {}, max_wait_seconds=max_wait)
    delivery = _ChannelDelivery(
        session_factory, chain, claim_lease, settings.retries, senders, rates, after_delivery
    )

    for channel in channels:

        @app.task(
            name=task_name(channel),
            base=DeliveryBatches,
            bind=True,
            flush_every=settings.batch_size,
            flush_interval=settings.batch_interval_seconds,
        )
        def send(self: Task, requests: list[SimpleRequest], channel: Channel = channel) -> list[Settle]:
            return delivery.run(self, requests, channel)

    return app


@dataclass(frozen=True)
class _Message:
    request: SimpleRequest
    notification_id: uuid.UUID
    # Of the work queue it came from, which its next try goes back to.
    priority: Priority

    @classmethod
    def read(cls, request: SimpleRequest) -> "_Message | None":
        """None when the message carries no notification id, or came by a routing key that names no
        priority (not published by Pulse): it is then dead-lettered."""
        # After any delayed-delivery prefix, the routing key is the work queue's <channel>.<priority>.
        routing_key = (request.delivery_info or {}).get("routing_key") or ""
        try:
            notification_id = uuid.UUID(str(request.args[0]))
            priority = priority_of(routing_key)
        except (IndexError, ValueError):
            return None
        return cls(request, notification_id, priority)


def _request_id(request: SimpleRequest) -> str | None:
    # The id of the HTTP request that accepted it, for the notification's log lines.
    return (request.request_dict or {}).get("request_id")


def _retries(request: SimpleRequest) -> int:
    return int((request.request_dict or {}).get("retries") or 0)


def _postpone(task: Task, message: _Message, channel: Channel) -> Settle:
    """Send the message again after a back-off that grows with each database outage it met."""
    retries = _retries(message.request)
    backoff = min(DATABASE_BACKOFF_CAP_SECONDS, DATABASE_BACKOFF_SECONDS * 2**retries)
    return _send_later(task, message, channel, backoff, retries=retries + 1)


def _send_later(
    task: Task, message: _Message, channel: Channel, delay_seconds: int, *, retries: int
) -> Settle:
    """Publish this notification's task again through RabbitMQ's delayed delivery (nothing waits in
    worker memory) and acknowledge the current message. If that publish fails, the current message
    goes back to its queue instead; should an accepted publish be lost later, the scheduler
    re-publishes the overdue retry (pulse.delivery.recovery)."""
    try:
        task.app.send_task(
            task.name,
            args=list(message.request.args),
            countdown=delay_seconds,
            queue=work_queue(channel, message.priority),
            retries=retries,
            headers={"request_id": _request_id(message.request)},
        )
    except Exception as error:  # noqa: BLE001 - whatever broke, the message goes back to its queue.
        log.warning("could not schedule the next try (%s); the message goes back to its queue", error)
        return Settle.REQUEUE
    return Settle.ACK


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
            # Pool threads run whole batches; their sends go to the `concurrency` sender threads.
            f"--concurrency={settings.batches_in_flight}",
            # Enough unacknowledged messages for every batch in flight to fill up.
            f"--prefetch-multiplier={settings.batch_size}",
            f"--hostname={hostname}",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
        ]
    )
