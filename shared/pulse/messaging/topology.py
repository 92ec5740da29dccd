"""The broker topology, declared once here and imported by the gateway, every worker and `pulse-admin init`.

    pulse.notifications (topic) --<channel>.<priority>--> pulse.<channel>.<priority> (quorum)
      | unroutable                                          | rejected
      v                                                     v
    pulse.unroutable (fanout) -> pulse.unroutable   pulse.dlx (topic) --#.<channel>.*--> pulse.<channel>.dead

    pulse.realtime (direct) --<tenant id>.<sha256 of user id>--> each realtime process's own queue

Dead-letter bindings start with `#.` because Celery's native delayed delivery prefixes the routing key of a
delayed message with 28 binary digits; `#.email.*` matches `email.high` and `0.1.….email.high` alike.
"""

from kombu import Connection, Exchange, Queue
from kombu.transport.native_delayed_delivery import (
    bind_queue_to_native_delayed_delivery_exchange,
    declare_native_delayed_delivery_exchanges_and_queues,
)

from pulse.vocabulary import Channel, Priority

UNROUTABLE_EXCHANGE = Exchange("pulse.unroutable", type="fanout", durable=True)
NOTIFICATIONS_EXCHANGE = Exchange(
    "pulse.notifications",
    type="topic",
    durable=True,
    arguments={"alternate-exchange": UNROUTABLE_EXCHANGE.name},
)
DEAD_LETTER_EXCHANGE = Exchange("pulse.dlx", type="topic", durable=True)
# In-app events (a new notification, items read) for the realtime processes: each binds a queue of its
# own with the routing key of every user connected to it (pulse.inapp.events). Unbound keys (the user
# is offline) are dropped on purpose: the inbox in PostgreSQL is the durable copy.
REALTIME_EXCHANGE = Exchange("pulse.realtime", type="direct", durable=True)

_QUORUM = {"x-queue-type": "quorum"}

UNROUTABLE_QUEUE = Queue("pulse.unroutable", UNROUTABLE_EXCHANGE, durable=True, queue_arguments=_QUORUM)


def routing_key(channel: Channel, priority: Priority) -> str:
    return f"{channel}.{priority}"


def task_name(channel: Channel) -> str:
    return f"pulse.{channel}.send"


def channel_of(routing_key: str) -> Channel:
    return Channel(routing_key.split(".", 1)[0])


def priority_of(routing_key: str) -> Priority:
    """The priority a work queue's routing key names, after any delayed-delivery prefix; raises
    ValueError when it names none."""
    return Priority(routing_key.rsplit(".", 1)[-1])


def work_queue(channel: Channel, priority: Priority) -> Queue:
    key = routing_key(channel, priority)
    return Queue(
        f"pulse.{key}",
        NOTIFICATIONS_EXCHANGE,
        routing_key=key,
        durable=True,
        queue_arguments={**_QUORUM, "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE.name},
    )


def work_queues(*channels: Channel) -> list[Queue]:
    return [work_queue(channel, priority) for channel in channels for priority in Priority]


def dead_letter_queue(channel: Channel) -> Queue:
    return Queue(
        f"pulse.{channel}.dead",
        DEAD_LETTER_EXCHANGE,
        routing_key=f"#.{channel}.*",
        durable=True,
        queue_arguments=_QUORUM,
    )


def declare_topology(connection: Connection) -> None:
    """Create every exchange, queue and binding. Idempotent; run before any traffic."""
    channel = connection.channel()
    try:
        UNROUTABLE_QUEUE.bind(channel).declare()
        NOTIFICATIONS_EXCHANGE.bind(channel).declare()
        DEAD_LETTER_EXCHANGE.bind(channel).declare()
        REALTIME_EXCHANGE.bind(channel).declare()
        declare_native_delayed_delivery_exchanges_and_queues(connection, "quorum")
        for queue in work_queues(*Channel):
            queue.bind(channel).declare()
            bind_queue_to_native_delayed_delivery_exchange(connection, queue)
        for channel_name in Channel:
            dead_letter_queue(channel_name).bind(channel).declare()
    finally:
        channel.close()
