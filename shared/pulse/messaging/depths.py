"""How many messages wait in each Pulse queue, read with passive declares (no management plugin needed)."""

from typing import Any

from kombu import Connection

from pulse.messaging.topology import UNROUTABLE_QUEUE, dead_letter_queue, work_queues
from pulse.vocabulary import Channel


def queue_names() -> list[str]:
    return [
        *(queue.name for queue in work_queues(*Channel)),
        *(dead_letter_queue(channel).name for channel in Channel),
        UNROUTABLE_QUEUE.name,
    ]


def queue_depths(connection: Connection) -> dict[str, int]:
    """Messages ready in each queue."""
    channel = connection.channel()
    try:
        return {name: ready_messages(channel, name) for name in queue_names()}
    finally:
        channel.close()


def ready_messages(channel: Any, queue: str) -> int:
    """Messages ready in `queue` on this AMQP channel (those a consumer holds unacknowledged are not
    counted). Raises if the queue does not exist (the broker then closes the channel)."""
    _name, ready, _consumers = channel.queue_declare(queue, passive=True)
    return int(ready)
