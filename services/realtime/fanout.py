"""Events from RabbitMQ to this process: one exclusive queue, bound to `pulse.realtime` with the routing
key of every user this process holds a connection of, consumed on the event loop (aio-pika).

The connection is robust: after a broker restart aio-pika reconnects and declares the queue and its
consumer again, and `_rebind` binds the keys of the users held at that moment (the old queue went with
the old connection, bindings and all).
"""

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection

from pulse.messaging.topology import REALTIME_EXCHANGE

log = logging.getLogger(__name__)

# Pushes are worth nothing late (the inbox has them): a process that cannot keep up drops the oldest.
_QUEUE_ARGUMENTS: dict[str, Any] = {"x-max-length": 10_000, "x-overflow": "drop-head"}


class Fanout:
    def __init__(
        self,
        broker_url: str,
        queue_name: str,
        *,
        deliver: Callable[[str, bytes], None],
        held_keys: Callable[[], Iterable[str]],
    ) -> None:
        self._url = broker_url
        self._queue_name = queue_name
        self._deliver = deliver
        self._held_keys = held_keys
        self._connection: AbstractRobustConnection | None = None
        self._queue: AbstractQueue | None = None
        self._publisher: AbstractChannel | None = None

    async def start(self) -> None:
        self._connection = await aio_pika.connect_robust(
            self._url,
            reconnect_interval=1,
            # Names the connection in RabbitMQ's tools after the process's queue.
            client_properties={"connection_name": self._queue_name},
        )
        channel = await self._connection.channel()
        self._queue = await channel.declare_queue(
            self._queue_name, exclusive=True, auto_delete=True, arguments=_QUEUE_ARGUMENTS
        )
        await self._queue.consume(self._on_message, no_ack=True)
        self._connection.reconnect_callbacks.add(self._rebind)
        self._publisher = await self._connection.channel(publisher_confirms=False)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def bind(self, key: str) -> None:
        """Route the user's events here; a broker that is down now gets the binding at reconnect."""
        await self._change_binding(key, bind=True)

    async def unbind(self, key: str) -> None:
        await self._change_binding(key, bind=False)

    async def publish(self, key: str, event: dict[str, Any]) -> None:
        """Send an event to every process holding the user (this one included); lost if the broker is
        down, as every push may be: the inbox is the durable copy."""
        assert self._publisher is not None
        try:
            exchange = await self._publisher.get_exchange(REALTIME_EXCHANGE.name, ensure=False)
            await exchange.publish(
                aio_pika.Message(body=json.dumps(event).encode(), content_type="application/json"),
                routing_key=key,
            )
        except Exception as error:  # noqa: BLE001 - a push is best effort, the read itself is committed.
            log.warning("could not publish a realtime %s event: %r", event.get("type"), error)

    async def _change_binding(self, key: str, *, bind: bool) -> None:
        assert self._queue is not None
        try:
            if bind:
                await self._queue.bind(REALTIME_EXCHANGE.name, key, robust=False)  # type: ignore[call-arg]
            else:
                await self._queue.unbind(REALTIME_EXCHANGE.name, key)
        except Exception as error:  # noqa: BLE001 - the broker is away; `_rebind` sets things right.
            log.warning("could not %s a user's routing key: %r", "bind" if bind else "unbind", error)

    async def _rebind(self, *_: object) -> None:
        keys = list(self._held_keys())
        log.info("reconnected to RabbitMQ: binding %d users again", len(keys))
        for key in keys:
            await self._change_binding(key, bind=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if message.routing_key is not None:
            self._deliver(message.routing_key, message.body)
