"""One Celery configuration for every Pulse process that publishes or consumes notifications."""

from celery import Celery
from kombu import Queue

from pulse.settings import BrokerSettings


def make_celery(name: str, broker: BrokerSettings, *, queues: list[Queue] | None = None) -> Celery:
    """A Celery app for a publisher (gateway, scheduler) or, given the `queues` it consumes, a worker."""
    app = Celery(name, broker=broker.url, set_as_current=False)
    if queues:
        # No publisher confirms in workers: Celery reads the worker's event connection in its event
        # loop (for heartbeats), which swallows the confirm a pool thread publishing a task event
        # waits for, and that thread hangs forever. Workers publish only events and retries.
        transport_options: dict[str, object] = {}
    else:
        transport_options = {
            # A confirmed publish returns once RabbitMQ stored the message: "sent" means "safe".
            "confirm_publish": True,
            # One quick connection attempt: a publisher that cannot reach the broker leaves the
            # message to the outbox instead of making its caller wait.
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.1,
            "interval_max": 0.1,
        }
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
        broker_transport_options=transport_options,
        broker_connection_timeout=broker.connect_timeout_seconds,
        broker_connection_retry_on_startup=True,
        task_queues=queues or [],
        task_create_missing_queues=False,
        # Celery's task sender needs its default queue among the declared ones; a worker always names
        # the queue it publishes to (retries), so which one is the default does not matter.
        task_default_queue=queues[0].name if queues else "celery",
        worker_hijack_root_logger=False,
        # Task events cost three publishes per task; Flower switches them on when it runs.
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    return app
