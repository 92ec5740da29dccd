"""Publishing a notification's task: by name, with publisher confirms, never importing worker code."""

import time
import uuid
from collections.abc import Sequence

from amqp.exceptions import MessageNacked
from celery import Celery
from kombu import Producer
from kombu.entity import PERSISTENT_DELIVERY_MODE

from pulse.messaging.topology import NOTIFICATIONS_EXCHANGE, channel_of, task_name
from pulse.observability.logging import request_id


def publish_notification(
    app: Celery,
    notification_id: uuid.UUID,
    routing_key: str,
    *,
    producer: Producer | None = None,
    exchange: str = NOTIFICATIONS_EXCHANGE.name,
) -> None:
    """Hand the notification to RabbitMQ; returns once the broker confirmed it, raises otherwise
    (with a `producer` of publish_notifications, confirms are awaited there). The `exchange` is
    pulse.notifications, or pulse.dlx for a notification that failed without its message."""
    args = [str(notification_id)]
    app.send_task(
        task_name(channel_of(routing_key)),
        args=args,
        # Given, so Celery skips its (costly) safe repr of the arguments.
        argsrepr=repr(args),
        kwargsrepr="{}",
        exchange=exchange,
        routing_key=routing_key,
        # `pulse-admin init` declared the topology; without this Celery would declare its default queue.
        declare=[],
        delivery_mode=PERSISTENT_DELIVERY_MODE,
        # The outbox is the retry: fail fast here and let the sweep publish it later.
        retry=False,
        # Custom message headers: the worker reads it back as task.request.request_id.
        headers={"request_id": request_id.get()},
        producer=producer,
    )


def publish_notifications(
    app: Celery, messages: Sequence[tuple[uuid.UUID, str]], *, confirm_timeout: float = 10.0
) -> None:
    """Hand many notifications (id, routing key) to RabbitMQ and wait once for all the confirms:
    one round trip for the lot instead of one per message. Raises if any is refused or unconfirmed."""
    # A connection of its own, without the per-message wait of `confirm_publish`.
    with app.connection_for_write(transport_options={"confirm_publish": False}) as connection:
        channel = connection.channel()
        channel.confirm_select()
        unconfirmed = set(range(1, len(messages) + 1))  # the delivery tags RabbitMQ will confirm
        refused: list[int] = []

        def confirmed(delivery_tag: int, multiple: bool) -> None:
            unconfirmed.difference_update(
                {tag for tag in unconfirmed if tag <= delivery_tag} if multiple else {delivery_tag}
            )

        def nacked(delivery_tag: int, multiple: bool) -> None:
            refused.append(delivery_tag)
            confirmed(delivery_tag, multiple)

        channel.events["basic_ack"].add(confirmed)
        channel.events["basic_nack"].add(nacked)
        producer = app.amqp.Producer(channel, auto_declare=False)
        for notification_id, routing_key in messages:
            publish_notification(app, notification_id, routing_key, producer=producer)
        deadline = time.monotonic() + confirm_timeout
        while unconfirmed:
            connection.drain_events(timeout=max(0.0, deadline - time.monotonic()))
        if refused:
            raise MessageNacked(f"RabbitMQ refused {len(refused)} of {len(messages)} messages")
