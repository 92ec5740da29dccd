"""Publishing notifications' tasks: by name, with publisher confirms, never importing worker code."""

import contextlib
import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from celery import Celery
from kombu import Connection, Producer
from kombu.entity import PERSISTENT_DELIVERY_MODE

from pulse.messaging.topology import NOTIFICATIONS_EXCHANGE, channel_of, task_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskMessage:
    """One notification's task: its id, where it goes, and the request that accepted it (for logs)."""

    notification_id: uuid.UUID
    routing_key: str
    request_id: str | None = None
    # pulse.notifications; pulse.dlx for a notification that failed while no worker held its message.
    exchange: str = NOTIFICATIONS_EXCHANGE.name


class UnconfirmedPublish(Exception):
    """RabbitMQ refused some of the messages, or did not confirm them in time (e.g. under a memory or
    disk alarm): the caller must assume none was taken."""


class ConfirmedPublisher:
    """One connection and channel in confirm mode, kept open: `publish` sends many messages and waits
    once for all their confirms. A connection found broken (the broker restarted, an idle connection
    reset) is replaced and the publish tried once more before the error reaches the caller.

    Not thread-safe: one thread owns it."""

    def __init__(self, app: Celery, *, confirm_timeout: float) -> None:
        self._app = app
        self._confirm_timeout = confirm_timeout
        self._connection: Connection | None = None
        self._producer: Producer | None = None
        self._last_tag = 0  # Delivery tags count up per channel, from 1.
        self._unconfirmed: set[int] = set()
        self._refused: set[int] = set()

    def publish(self, messages: Sequence[TaskMessage]) -> None:
        """Returns once RabbitMQ confirmed every message; raises otherwise (UnconfirmedPublish, or the
        connection error that a fresh connection met too)."""
        if not messages:
            return
        try:
            self._publish(messages)
        except UnconfirmedPublish:
            self.close()  # Late confirms of these must not count for the next publish.
            raise
        except Exception as error:  # noqa: BLE001 - any broken connection: one more try on a new one.
            log.info("publishing again on a new broker connection after: %r", error)
            self.close()
            self._publish(messages)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.release()
        self._connection = self._producer = None

    def _publish(self, messages: Sequence[TaskMessage]) -> None:
        if self._producer is None:
            self._connect()
        else:
            self._read_pending()  # A close the broker sent while we idled raises here, not as a timeout.
        assert self._connection is not None and self._producer is not None
        producer = self._producer
        tags = set(range(self._last_tag + 1, self._last_tag + 1 + len(messages)))
        self._last_tag += len(messages)
        # Counted as unconfirmed first: confirms may already be read while later messages go out.
        self._unconfirmed |= tags
        with _one_write(self._connection):
            for message in messages:
                _send(self._app, message, producer)
        deadline = time.monotonic() + self._confirm_timeout
        while self._unconfirmed & tags:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise UnconfirmedPublish(f"RabbitMQ did not confirm {len(messages)} messages in time")
            try:
                self._connection.drain_events(timeout=remaining)
            except TimeoutError:
                continue
        if refused := self._refused & tags:
            self._refused -= tags
            raise UnconfirmedPublish(f"RabbitMQ refused {len(refused)} of {len(messages)} messages")

    def _read_pending(self) -> None:
        assert self._connection is not None
        with contextlib.suppress(TimeoutError):  # Nothing was waiting.
            self._connection.drain_events(timeout=0)

    def _connect(self) -> None:
        # No heartbeats: nothing would send them while the publisher idles, and the broker would then
        # close the connection under it. A dead peer shows as an error on the next publish instead.
        connection = self._app.connection_for_write(heartbeat=0, transport_options={"confirm_publish": False})
        channel = connection.channel()
        channel.confirm_select()
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        self._connection = connection
        self._last_tag = 0
        self._unconfirmed.clear()
        self._refused.clear()
        self._producer = self._app.amqp.Producer(channel, auto_declare=False)

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self._unconfirmed = {tag for tag in self._unconfirmed if tag > delivery_tag}
        else:
            self._unconfirmed.discard(delivery_tag)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._refused |= (
            {tag for tag in self._unconfirmed if tag <= delivery_tag} if multiple else {delivery_tag}
        )
        self._on_ack(delivery_tag, multiple)


@contextlib.contextmanager
def _one_write(connection: Connection) -> Iterator[None]:
    """The frames of the messages published inside, written to the socket at once when it ends.
    py-amqp writes each message's frames with a system call of its own: 40 % of the publisher's CPU
    when it publishes a fan-out chunk's thousand. Its transport writes through `_write` (the socket's
    `sendall`, tests/messaging/test_publisher.py pins that); each frame is copied, as py-amqp reuses
    the buffer it hands over."""
    transport = connection.connection.transport
    send_all = transport._write
    frames: list[bytes] = []
    transport._write = lambda frame: frames.append(bytes(frame))
    try:
        yield
    finally:
        transport._write = send_all
    send_all(b"".join(frames))


def _send(app: Celery, message: TaskMessage, producer: Producer) -> None:
    """The task message as `send_task` would build it (Celery's own protocol-2 builder), published
    straight to the exchange: send_task's routing, signals and result bookkeeping cost more than the
    publish itself, and none of them serve a message whose destination is fixed."""
    task_id = str(uuid.uuid4())
    args = [str(message.notification_id)]
    headers, properties, body, _ = app.amqp.as_task_v2(
        task_id,
        task_name(channel_of(message.routing_key)),
        args,
        # Given, so Celery skips its (costly) safe repr of the arguments.
        argsrepr=repr(args),
        kwargsrepr="{}",
    )
    # A custom header: the worker reads it back from the request, for its log lines.
    headers["request_id"] = message.request_id
    producer.publish(
        body,
        exchange=message.exchange,
        routing_key=message.routing_key,
        serializer="json",
        headers=headers,
        delivery_mode=PERSISTENT_DELIVERY_MODE,
        # `pulse-admin init` declared the topology.
        declare=[],
        # Whoever publishes has a retry of its own (the outbox sweep).
        retry=False,
        **properties,
    )
