"""WS /v1/ws?token=<jwt>: one end user's live inbox.

Server → client: `missed_notifications` once, then `notification`, `read` (ids read on any connection or
through the gateway), `pong`, and `error` for a read of an unknown item. Client → server: `ping` and
`read`. A bad token is refused at the handshake (HTTP 403); then close codes: 4401 when the token
expires (reconnect with a fresh one), 4429 over the per-user limit, 1009 a message over the size limit,
1003 anything but a JSON object of a known type, 4408 idle, 1008 too slow to read what it is sent, 1012
its record expired (reconnect).
"""

import asyncio
import contextlib
import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.responses import Response
from starlette.websockets import WebSocketDisconnect

from pulse.inapp import inbox
from pulse.inapp.events import read_event
from pulse.inapp.tokens import EndUser, InvalidToken, read_token
from pulse.observability import metrics
from pulse.realtime import connections
from services.realtime.hub import IDLE_TIMEOUT, UNSUPPORTED_DATA, UserSocket
from services.realtime.state import Realtime

log = logging.getLogger(__name__)
router = APIRouter()

# Every reason shows on /metrics from the start, at 0.
for _reason in ("invalid_token", "too_many_connections", "unavailable"):
    metrics.REALTIME_REFUSED.labels(_reason)
for _reason in ("too_big", "malformed", "idle", "slow_consumer", "expired", "token_expired"):
    metrics.REALTIME_CLOSED.labels(_reason)

TOO_MANY_CONNECTIONS = 4429
MESSAGE_TOO_BIG = 1009


@router.websocket("/v1/ws")
async def live_inbox(websocket: WebSocket) -> None:
    realtime: Realtime = websocket.app.state.realtime
    settings = realtime.settings
    try:
        end_user, expires_at = read_token(
            settings.jwt.secret.get_secret_value(), websocket.query_params.get("token", "")
        )
    except InvalidToken:
        metrics.REALTIME_REFUSED.labels("invalid_token").inc()
        await websocket.close()  # Before accepting: the handshake is answered 403.
        return
    try:
        connection_id = await realtime.in_transaction(
            lambda session: connections.register(
                session,
                end_user,
                process_id=realtime.process_id,
                limit=settings.max_connections_per_user,
                stale_after=realtime.stale_after,
            )
        )
    except Exception as error:  # noqa: BLE001 - PostgreSQL away: the client may retry later.
        log.warning("could not record a connection: %r", error)
        metrics.REALTIME_REFUSED.labels("unavailable").inc()
        await websocket.send_denial_response(Response(status_code=503, headers={"Retry-After": "5"}))
        return
    await websocket.accept()
    if connection_id is None:
        metrics.REALTIME_REFUSED.labels("too_many_connections").inc()
        limit = settings.max_connections_per_user
        await websocket.close(TOO_MANY_CONNECTIONS, f"at most {limit} connections per user")
        return
    socket = UserSocket(websocket, end_user, connection_id, settings.send_queue_size)
    # The token is checked only here: the connection must not outlive it. A timer handle per
    # connection, not a task, keeps 10,000 of them cheap.
    expiry = asyncio.get_running_loop().call_later(
        (expires_at - datetime.now(UTC)).total_seconds(), socket.expire
    )
    try:
        await realtime.hub.add(socket)
        # After the bind: a notification arriving meanwhile is sent twice at worst, never lost.
        missed = await realtime.in_transaction(
            lambda session: inbox.unread_items(session, end_user, limit=settings.missed_limit)
        )
        await websocket.send_text(
            json.dumps(
                {"type": "missed_notifications", "items": [item.model_dump(mode="json") for item in missed]}
            )
        )
        metrics.REALTIME_MESSAGES_SENT.labels("missed_notifications").inc()
        await _serve(realtime, socket)
    except WebSocketDisconnect:
        pass
    finally:
        expiry.cancel()
        await realtime.hub.remove(socket)
        with contextlib.suppress(Exception):  # If PostgreSQL is away, the row goes stale instead.
            await realtime.in_transaction(lambda session: connections.release(session, connection_id))


async def _serve(realtime: Realtime, socket: UserSocket) -> None:
    """Until the client leaves or the server closes the connection: send what is queued, answer what
    arrives."""
    tasks = [
        asyncio.create_task(socket.drain()),
        asyncio.create_task(_receive(realtime, socket)),
        asyncio.create_task(socket.closing.wait()),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if socket.closing.is_set():
        # A client too slow to read is likely too slow for the close frame: don't wait for it.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(socket.websocket.close(socket.close_code, socket.close_reason), 1)


async def _receive(realtime: Realtime, socket: UserSocket) -> None:
    idle = realtime.settings.idle_timeout_seconds
    while True:
        try:
            message = await asyncio.wait_for(socket.websocket.receive(), idle)
        except TimeoutError:
            socket.close(IDLE_TIMEOUT, f"nothing received for {idle:g} s", why="idle")
            return
        if message["type"] == "websocket.disconnect":
            if message.get("code") == MESSAGE_TOO_BIG:
                metrics.REALTIME_CLOSED.labels("too_big").inc()
            return
        request = _parse(message.get("text"))
        if request is None:
            socket.close(UNSUPPORTED_DATA, "expected a JSON object with a known `type`", why="malformed")
            return
        if request["type"] == "ping":
            socket.send({"type": "pong"})
        else:
            await _read(realtime, socket, request["id"])


def _parse(text: str | None) -> dict[str, Any] | None:
    """A well-formed client message (ping, or read with an item id), else None."""
    if text is None:
        return None  # A binary frame.
    try:
        request = json.loads(text)
    except ValueError:
        return None
    if not isinstance(request, dict):
        return None
    if request.get("type") == "ping":
        return request
    if request.get("type") == "read" and isinstance(request.get("id"), str):
        try:
            return {"type": "read", "id": uuid.UUID(request["id"])}
        except ValueError:
            return None
    return None


async def _read(realtime: Realtime, socket: UserSocket, notification_id: uuid.UUID) -> None:
    """Mark the item read; every connection of the user hears of it through the `read` event."""
    end_user: EndUser = socket.end_user
    item = await realtime.in_transaction(lambda session: inbox.mark_read(session, end_user, notification_id))
    if item is None:
        socket.send({"type": "error", "error": "not_found", "id": str(notification_id)})
        return
    assert realtime.hub.fanout is not None
    await realtime.hub.fanout.publish(socket.routing_key, read_event(end_user, [item.id]))
