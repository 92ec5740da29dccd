"""One Celery configuration for every Pulse process that publishes or consumes notifications."""

from celery import Celery
from kombu import Queue

from pulse.settings import BrokerSettings


def make_celery(
    name: str, broker: BrokerSettings, *, queues: list[Queue] | None = None, confirm_publish: bool = True
) -> Celery:
    """A Celery app for a publisher (confirmed publishes) or, with `queues`, for a worker.

    Workers must pass `confirm_publish=False`: Celery registers the worker's event connection with its
    event loop (to read heartbeats), so the loop swallows the confirms that a pool thread publishing a
    task event waits for, and that thread hangs forever. A worker only publishes events and retries;
    the notification itself is safe in PostgreSQL either way.
    """
    app = Celery(name, broker=broker.url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        # A message leaves the queue only once its task finished: a killed worker loses nothing.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # Failures are decided by the task itself (reject to the dead-letter queue or retry later).
        task_acks_on_failure_or_timeout=True,
        # A confirmed publish returns once RabbitMQ stored the message, so "sent" means "safe".
        broker_transport_options={"confirm_publish": confirm_publish},
        broker_connection_timeout=broker.connect_timeout_seconds,
        broker_connection_retry_on_startup=True,
        task_queues=queues or [],
        task_create_missing_queues=False,
        worker_hijack_root_logger=False,
        # Task events cost three publishes per task; Flower switches them on when it runs.
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    return app
