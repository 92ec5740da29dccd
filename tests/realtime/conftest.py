"""Realtime processes on a private database and vhost, end-user tokens for them, and in-app items."""

import json
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from devtools.stack import Infrastructure, Stack, running_stack
from pulse.db import transaction
from pulse.inapp.events import RealtimePublisher
from pulse.inapp.tokens import EndUser, issue_token
from pulse.settings import BrokerSettings
from tests.conftest import new_tenant

JWT_SECRET = "realtime-tests-" + "x" * 32
QUICK = {
    "PULSE_JWT_SECRET": JWT_SECRET,
    "PULSE_REALTIME_HEARTBEAT_SECONDS": "0.5",
    "PULSE_REALTIME_STALE_AFTER_SECONDS": "3",
    "PULSE_REALTIME_SEND_QUEUE_SIZE": "8",
}


@pytest.fixture(scope="module")
def realtime(private: Infrastructure, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two realtime processes, `realtime` and `realtime_2`, as on two hosts."""
    with running_stack(
        private, tmp_path_factory.mktemp("realtime"), extra_env=QUICK, services=("realtime",)
    ) as stack:
        stack.start_replica("realtime", "realtime_2")
        yield stack


@pytest.fixture(scope="module")
def tenant_id(factory: sessionmaker[Session]) -> uuid.UUID:
    return new_tenant(factory).id


@pytest.fixture
def user(tenant_id: uuid.UUID) -> EndUser:
    return EndUser(tenant_id=tenant_id, user_id=f"user-{secrets.token_hex(4)}")


@pytest.fixture(scope="module")
def events(private: Infrastructure) -> Iterator[RealtimePublisher]:
    """Publishes realtime events as the in-app worker and the gateway do."""
    publisher = RealtimePublisher(
        BrokerSettings(url=private.broker_url, connect_timeout_seconds=10), backoff_seconds=0
    )
    yield publisher
    publisher.close()


def token_for(user: EndUser, ttl_seconds: int = 600) -> str:
    token, _ = issue_token(JWT_SECRET, user, ttl_seconds)
    return token


def ws_url(stack: Stack, token: str, name: str = "realtime") -> str:
    return f"{stack.realtime_url(name).replace('http', 'ws', 1)}/v1/ws?token={token}"


@contextmanager
def open_socket(stack: Stack, user: EndUser, name: str = "realtime") -> Iterator[ClientConnection]:
    """A connected client, past its `missed_notifications`."""
    with connect(ws_url(stack, token_for(user), name), open_timeout=10) as client:
        assert receive(client)["type"] == "missed_notifications"
        yield client


def receive(client: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(client.recv(timeout=timeout))
    return message


def close_code(client: ClientConnection, timeout: float = 10) -> int | None:
    """The code the server closed the connection with (messages before it are skipped)."""
    try:
        while True:
            client.recv(timeout=timeout)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


def delivered_item(
    factory: sessionmaker[Session], user: EndUser, subject: str, priority: str = "normal"
) -> str:
    """An in-app notification in the user's inbox, unread, as the in-app worker leaves it."""
    notification_id = uuid.uuid4()
    with transaction(factory) as session:
        session.execute(
            text(
                "INSERT INTO notifications (id, tenant_id, channel, priority, recipient, user_id, status,"
                " content, delivered_at) VALUES (:id, :tenant, 'inapp', :priority, :user, :user_id,"
                " 'delivered', :content, now())"
            ),
            {
                "id": notification_id,
                "tenant": user.tenant_id,
                "user": user.user_id,
                "user_id": user.user_id,
                "priority": priority,
                "content": json.dumps({"subject": subject, "body": f"body of {subject}", "data": {"n": 1}}),
            },
        )
    return str(notification_id)
