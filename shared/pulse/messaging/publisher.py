"""Publishing a notification's task: by name, with publisher confirms, never importing worker code."""

import uuid

from celery import Celery
from kombu.entity import PERSISTENT_DELIVERY_MODE

from pulse.messaging.topology import NOTIFICATIONS_EXCHANGE, channel_of, task_name
from pulse.observability.logging import request_id


def publish_notification(app: Celery, notification_id: uuid.UUID, routing_key: str) -> None:
    """Hand the notification to RabbitMQ; returns once the broker confirmed it, raises otherwise."""
    args = [str(notification_id)]
    app.send_task(
        task_name(channel_of(routing_key)),
        args=args,
        # Given, so Celery skips its (costly) safe repr of the arguments.
        argsrepr=repr(args),
        kwargsrepr="{}",
        exchange=NOTIFICATIONS_EXCHANGE.name,
        routing_key=routing_key,
        # `pulse-admin init` declared the topology; without this Celery would declare its default queue.
        declare=[],
        delivery_mode=PERSISTENT_DELIVERY_MODE,
        # The outbox is the retry: fail fast here and let the sweep publish it later.
        retry=False,
        # Custom message headers: the worker reads it back as task.request.request_id.
        headers={"request_id": request_id.get()},
    )
