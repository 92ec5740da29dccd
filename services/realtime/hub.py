"""The WebSockets this process holds, by user, and how events reach them.

Each socket has a bounded send queue drained by its own task, so one client that reads slowly (or not at
all) holds up nobody: when its queue is full it is disconnected. A user's routing key is bound on this
process's queue while the process holds at least one socket of that user.
"""

import asyncio
import json
import logging
import uuid
from collections.abc import Iterable
from typing import Any

from starlette.websockets import WebSocket

from pulse.inapp.events import NOTIFICATION_EVENT, READ_EVENT, realtime_routing_key
from pulse.inapp.tokens import EndUser
from pulse.observability import metrics
from services.realtime.fanout import Fanout

log = logging.getLogger(__name__)

# Close codes (RFC 6455 and the 4000-4999 range left to applications).
UNSUPPORTED_DATA = 1003  # not JSON, not an object, or an unknown type
POLICY_VIOLATION = 1008  # too slow: the send queue filled up
SERVICE_RESTART = 1012  # the connection's row expired (this process stalled): reconnect
TOKEN_EXPIRED = 4401  # the token's `exp` passed: reconnect with a fresh one
IDLE_TIMEOUT = 4408


class UserSocket:
    """One client connection: its user, its row in `realtime_connections` and its send queue."""

    def __init__(
        self, websocket: WebSocket, end_user: EndUser, connection_id: uuid.UUID, queue_size: int
    ) -> None:
        self.websocket = websocket
        self.end_user = end_user
        self.connection_id = connection_id
        self.routing_key = realtime_routing_key(end_user)
        self._outgoing: asyncio.Queue[tuple[str, str]] = asyncio.Queue(queue_size)
        # Set when the server decides to end the connection, with the code to close it with.
        self.closing = asyncio.Event()
        self.close_code = 1000
        self.close_reason = ""

    def send(self, message: dict[str, Any]) -> None:
        """Queue a message for the client, or drop the client if it has let too many pile up."""
        if self.closing.is_set():
            return
        try:
            self._outgoing.put_nowait((message["type"], json.dumps(message, separators=(",", ":"))))
        except asyncio.QueueFull:
            self.close(POLICY_VIOLATION, "too slow: the send queue is full", why="slow_consumer")

    def close(self, code: int, reason: str, *, why: str) -> None:
        if not self.closing.is_set():
            self.close_code, self.close_reason = code, reason
            metrics.REALTIME_CLOSED.labels(why).inc()
            self.closing.set()

    def expire(self) -> None:
        self.close(TOKEN_EXPIRED, "token expired", why="token_expired")

    async def drain(self) -> None:
        """Send queued messages for as long as the connection lasts."""
        while True:
            message_type, text = await self._outgoing.get()
            await self.websocket.send_text(text)
            metrics.REALTIME_MESSAGES_SENT.labels(message_type).inc()


class Hub:
    def __init__(self) -> None:
        self._sockets: dict[str, set[UserSocket]] = {}
        # The bind of each user's key, awaited by every socket of the user that connects meanwhile.
        self._binds: dict[str, asyncio.Task[None]] = {}
        self.fanout: Fanout | None = None

    def held_keys(self) -> Iterable[str]:
        return list(self._sockets)

    def sockets(self) -> list[UserSocket]:
        return [socket for sockets in self._sockets.values() for socket in sockets]

    async def add(self, socket: UserSocket) -> None:
        """Hold the socket; returns once the user's events are routed to this process."""
        assert self.fanout is not None
        key = socket.routing_key
        if key not in self._sockets:
            self._sockets[key] = set()
            self._binds[key] = asyncio.create_task(self.fanout.bind(key))
        self._sockets[key].add(socket)
        metrics.REALTIME_CONNECTIONS.inc()
        await asyncio.shield(self._binds[key])

    async def remove(self, socket: UserSocket) -> None:
        assert self.fanout is not None
        key = socket.routing_key
        sockets = self._sockets.get(key, set())
        if socket not in sockets:
            return
        sockets.discard(socket)
        socket.closing.set()  # Whatever else wanted to close it is too late.
        metrics.REALTIME_CONNECTIONS.dec()
        if not sockets:
            del self._sockets[key]
            self._binds.pop(key, None)
            await self.fanout.unbind(key)

    def deliver(self, routing_key: str, body: bytes) -> None:
        """An event from RabbitMQ: pass it to each socket of its user held here."""
        sockets = self._sockets.get(routing_key)
        if not sockets:
            return  # The user's last socket here closed meanwhile.
        try:
            event = json.loads(body)
            message = _client_message(event)
        except (ValueError, KeyError, TypeError) as error:
            log.warning("dropped a malformed realtime event: %r", error)
            return
        for socket in list(sockets):
            socket.send(message)


def _client_message(event: dict[str, Any]) -> dict[str, Any]:
    """What a client is sent for an event: the event without its addressing."""
    if event["type"] == NOTIFICATION_EVENT:
        return {"type": NOTIFICATION_EVENT, "notification": event["notification"]}
    if event["type"] == READ_EVENT:
        return {"type": READ_EVENT, "ids": list(event["ids"])}
    raise ValueError(f"unknown event type {event['type']!r}")
