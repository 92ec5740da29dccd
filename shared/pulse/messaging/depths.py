"""How many messages wait in each Pulse queue, read with passive declares (no management plugin needed)."""

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
    """Messages ready in each queue (those a consumer holds unacknowledged are not counted)."""
    depths = {}
    channel = connection.channel()
    try:
        for name in queue_names():
            _name, ready, _consumers = channel.queue_declare(name, passive=True)
            depths[name] = int(ready)
    finally:
        channel.close()
    return depths
