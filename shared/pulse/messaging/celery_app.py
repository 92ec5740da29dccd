"""One Celery configuration for every Pulse process that publishes or consumes notifications."""

from celery import Celery
from kombu import Queue

from pulse.settings import BrokerSettings


def make_celery(name: str, broker: BrokerSettings, *, queues: list[Queue] | None = None) -> Celery:
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
        # Every publish waits for RabbitMQ's confirm, so "sent" means "stored by the broker".
        broker_transport_options={"confirm_publish": True},
        broker_connection_timeout=broker.connect_timeout_seconds,
        broker_connection_retry_on_startup=True,
        task_queues=queues or [],
        task_create_missing_queues=False,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=False,
    )
    return app
