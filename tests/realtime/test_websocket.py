"""The WebSocket of two realtime processes (as on two hosts), against a private database and vhost:
handshake refusals, a connection closed when its token expires, the per-user limit across processes,
message bounds, ping, reads seen by every connection of the user, and a client too slow to read that is
dropped without holding up others."""

import base64
import json
import secrets
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from devtools.stack import Stack, metric_value
from pulse.inapp.events import RealtimePublisher, notification_event
from pulse.inapp.inbox import InboxItem
from pulse.inapp.tokens import EndUser, issue_token
from pulse.realtime import connections
from tests.conftest import wait_until
from tests.realtime.conftest import (
    JWT_SECRET,
    close_code,
    delivered_item,
    open_socket,
    receive,
    token_for,
    ws_url,
)


def _item(subject: str, body: str = "hello") -> InboxItem:
    return InboxItem(
        id=uuid.uuid4(),
        subject=subject,
        body=body,
        data=None,
        priority="high",
        status="delivered",
        created_at=datetime.now(UTC),
        read_at=None,
    )


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not-a-jwt",
        "expired",
        "wrong-secret",
    ],
)
def test_a_missing_invalid_or_expired_token_is_refused_at_the_handshake(
    realtime: Stack, user: EndUser, token: str
) -> None:
    if token == "expired":
        token = token_for(user, ttl_seconds=-60)
    elif token == "wrong-secret":
        token, _ = issue_token("another-secret-" + "y" * 32, user, 600)
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(realtime, token), open_timeout=10)
    assert refused.value.response.status_code == 403


def test_missed_notifications_newest_first_then_live_ones(
    realtime: Stack, factory: sessionmaker[Session], user: EndUser, events: RealtimePublisher
) -> None:
    older = delivered_item(factory, user, "older")
    newer = delivered_item(factory, user, "newer", priority="critical")
    with connect(ws_url(realtime, token_for(user)), open_timeout=10) as client:
        missed = receive(client)
        assert missed["type"] == "missed_notifications"
        assert [item["id"] for item in missed["items"]] == [newer, older]
        assert missed["items"][0]["subject"] == "newer"
        assert missed["items"][0]["priority"] == "critical"
        assert missed["items"][0]["read_at"] is None

        live = _item("live")
        assert events.publish(user, notification_event(user, live))
        message = receive(client)
        assert message == {"type": "notification", "notification": live.model_dump(mode="json")}


def test_a_connection_is_closed_with_4401_when_its_token_expires_and_others_stay(
    realtime: Stack, factory: sessionmaker[Session], tenant_id: uuid.UUID, events: RealtimePublisher
) -> None:
    brief = EndUser(tenant_id=tenant_id, user_id=f"brief-{secrets.token_hex(4)}")
    steady = EndUser(tenant_id=tenant_id, user_id=f"steady-{secrets.token_hex(4)}")

    def connections_of(end_user: EndUser) -> int:
        with factory() as session:
            return connections.presence(session, end_user, stale_after=timedelta(seconds=3)).connections

    token, expires_at = issue_token(JWT_SECRET, brief, 3)
    with connect(ws_url(realtime, token), open_timeout=10) as client, open_socket(realtime, steady) as other:
        assert receive(client)["type"] == "missed_notifications"
        assert connections_of(brief) == 1
        # The heartbeat (every 0.5 s here) does not keep it alive past its token.
        assert close_code(client, timeout=15) == 4401
        assert datetime.now(UTC) >= expires_at
        assert client.close_reason == "token expired"
        wait_until(lambda: connections_of(brief) == 0, what="the expired connection to leave presence")

        live = _item("still connected")
        assert events.publish(steady, notification_event(steady, live))
        assert receive(other)["notification"]["id"] == str(live.id)
        assert connections_of(steady) == 1


def test_a_sixth_connection_of_a_user_across_both_processes_is_closed_with_4429(
    realtime: Stack, user: EndUser, events: RealtimePublisher
) -> None:
    with ExitStack() as held:
        clients = [
            held.enter_context(open_socket(realtime, user, name))
            for name in ("realtime", "realtime_2", "realtime", "realtime_2", "realtime")
        ]
        for name in ("realtime", "realtime_2"):
            with connect(ws_url(realtime, token_for(user), name), open_timeout=10) as sixth:
                assert close_code(sixth) == 4429

        # Every one of the five is live, whichever process holds it.
        live = _item("to all five")
        assert events.publish(user, notification_event(user, live))
        assert all(receive(client)["notification"]["id"] == str(live.id) for client in clients)

        clients[0].close()
        wait_until(lambda: _connects(realtime, user), what="a free slot once one closed")


def _connects(realtime: Stack, user: EndUser) -> bool:
    with connect(ws_url(realtime, token_for(user), "realtime_2"), open_timeout=10) as client:
        try:
            return receive(client)["type"] == "missed_notifications"
        except ConnectionClosed:
            return False


def test_ping_is_answered_with_pong(realtime: Stack, user: EndUser) -> None:
    with open_socket(realtime, user) as client:
        client.send(json.dumps({"type": "ping"}))
        assert receive(client) == {"type": "pong"}


def test_compression_offered_by_the_client_is_declined_by_default(realtime: Stack, user: EndUser) -> None:
    # The sync client offers permessage-deflate, as browsers do; each accepted offer would hold two zlib
    # streams for the connection's life (PULSE_REALTIME_COMPRESSION).
    with open_socket(realtime, user) as client:
        assert client.protocol.extensions == []
        assert "permessage-deflate" in client.request.headers["Sec-WebSocket-Extensions"]


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (json.dumps({"type": "ping", "padding": "x" * 5000}), 1009),
        ("{not json", 1003),
        (json.dumps(["ping"]), 1003),
        (json.dumps({"type": "subscribe"}), 1003),
        (json.dumps({"type": "read", "id": "not-a-uuid"}), 1003),
        (b"\x00binary", 1003),
    ],
    ids=["too-big", "not-json", "not-an-object", "unknown-type", "bad-id", "binary"],
)
def test_a_message_out_of_bounds_closes_the_connection(
    realtime: Stack, user: EndUser, message: str | bytes, code: int
) -> None:
    with open_socket(realtime, user) as client:
        client.send(message)
        assert close_code(client) == code
    # The process is fine: the same user connects again.
    with open_socket(realtime, user) as client:
        client.send(json.dumps({"type": "ping"}))
        assert receive(client) == {"type": "pong"}


def test_a_read_marks_the_item_read_and_reaches_the_user_s_other_connections(
    realtime: Stack, factory: sessionmaker[Session], user: EndUser
) -> None:
    item = delivered_item(factory, user, "to read")
    with (
        open_socket(realtime, user, "realtime") as reader,
        open_socket(realtime, user, "realtime_2") as other,
    ):
        reader.send(json.dumps({"type": "read", "id": item}))
        assert receive(reader) == {"type": "read", "ids": [item]}
        assert receive(other) == {"type": "read", "ids": [item]}
        with factory() as session:
            status, read_at = session.execute(
                text("SELECT status, read_at FROM notifications WHERE id = :id"), {"id": item}
            ).one()
        assert status == "read" and read_at is not None

        unknown = str(uuid.uuid4())
        reader.send(json.dumps({"type": "read", "id": unknown}))
        assert receive(reader) == {"type": "error", "error": "not_found", "id": unknown}

    # Read items are not missed any more.
    with connect(ws_url(realtime, token_for(user)), open_timeout=10) as client:
        assert receive(client) == {"type": "missed_notifications", "items": []}


@contextmanager
def _stuck_client(stack: Stack, user: EndUser) -> Iterator[socket.socket]:
    """A client that completes the handshake and then never reads: a plain socket with a small receive
    buffer, so that what the server sends piles up quickly."""
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.settimeout(10)
    with client:
        client.connect(("127.0.0.1", stack.ports["realtime"]))
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        client.sendall(
            f"GET /v1/ws?token={token_for(user)} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        response = b""
        while b"\r\n\r\n" not in response:
            response += client.recv(1)
        assert response.startswith(b"HTTP/1.1 101"), response
        yield client


def test_a_client_too_slow_to_read_is_dropped_and_holds_up_nobody(
    realtime: Stack, factory: sessionmaker[Session], tenant_id: uuid.UUID, events: RealtimePublisher
) -> None:
    slow = EndUser(tenant_id=tenant_id, user_id=f"slow-{secrets.token_hex(4)}")
    steady = EndUser(tenant_id=tenant_id, user_id=f"steady-{secrets.token_hex(4)}")
    dropped = 'pulse_realtime_closed_total{reason="slow_consumer"}'
    metrics_url = f"{realtime.realtime_url()}/metrics"
    before = metric_value(metrics_url, dropped)
    with _stuck_client(realtime, slow), open_socket(realtime, steady) as client:
        big = "x" * 256 * 1024

        def flood_until_dropped() -> bool:
            for _ in range(10):
                events.publish(slow, notification_event(slow, _item("flood", big)))
            # Meanwhile the other user's pushes go through at once.
            steady_item = _item("still here")
            events.publish(steady, notification_event(steady, steady_item))
            assert receive(client)["notification"]["id"] == str(steady_item.id)
            return metric_value(metrics_url, dropped) > before

        wait_until(flood_until_dropped, timeout=120, what="the slow client to be dropped")
        last = _item("after the drop")
        events.publish(steady, notification_event(steady, last))
        assert receive(client)["notification"]["id"] == str(last.id)

        # Its connection is over and recorded as such: the user has none left.
        def slow_user_rows() -> int:
            with factory() as session:
                return int(
                    session.scalar(
                        text("SELECT count(*) FROM realtime_connections WHERE user_id = :u"),
                        {"u": slow.user_id},
                    )
                    or 0
                )

        wait_until(lambda: slow_user_rows() == 0, what="the slow client's connection row to go")


def test_a_client_that_sends_nothing_is_disconnected_after_the_idle_timeout(
    realtime: Stack, user: EndUser
) -> None:
    realtime.service_env["realtime"] = {"PULSE_REALTIME_IDLE_TIMEOUT_SECONDS": "1"}
    try:
        realtime.start_replica("realtime", "realtime_idle")
    finally:
        del realtime.service_env["realtime"]
    with open_socket(realtime, user, "realtime_idle") as client:
        assert close_code(client, timeout=30) == 4408


def _broker_connections(realtime: Stack, name: str) -> set[str]:
    """The pids (in RabbitMQ) of the AMQP connections of the realtime process `name` (named after its
    queue, `pulse.realtime.<host>.<pid>.<random>`)."""
    marker = f"pulse.realtime.{socket.gethostname()}.{realtime.pids[name]}."
    vhost = realtime.infrastructure.broker_url.rsplit("/", 1)[1]
    output = subprocess.run(
        ["rabbitmqctl", "-q", "-s", "list_connections", "-p", vhost, "pid", "client_properties"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return {line.split("\t", 1)[0] for line in output.splitlines() if marker in line}


@pytest.mark.skipif(not shutil.which("rabbitmqctl"), reason="needs rabbitmqctl (the broker on this machine)")
def test_after_its_broker_connection_drops_a_process_reconnects_and_routes_its_users_again(
    realtime: Stack, user: EndUser, events: RealtimePublisher
) -> None:
    with open_socket(realtime, user, "realtime") as client:
        dropped = _broker_connections(realtime, "realtime")
        assert dropped
        for pid in dropped:  # as a broker restart would, for these connections only
            subprocess.run(
                ["rabbitmqctl", "-q", "close_connection", pid, "test: broker connection lost"],
                check=True,
                capture_output=True,
                timeout=60,
            )
        published: set[str] = set()

        def pushed_again() -> bool:
            item = _item("after the reconnect")
            published.add(str(item.id))
            events.publish(user, notification_event(user, item))
            try:
                return receive(client, timeout=1)["notification"]["id"] in published
            except TimeoutError:
                return False

        wait_until(pushed_again, timeout=60, what="a push to reach the socket after the reconnect")
        reconnected = _broker_connections(realtime, "realtime")
        assert reconnected and not reconnected & dropped
