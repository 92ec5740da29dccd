"""End to end, two realtime processes behind one gateway (as on two hosts): an inapp send through the
gateway reaches the user's socket on the other process within a second of being stored, and presence
counts the user's connections across both, and stops counting those of a process killed with SIGKILL
once their rows go stale."""

import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest
from websockets.sync.client import connect

from devtools.stack import Infrastructure, Stack, running_stack
from pulse.tenants.service import Scope
from tests.conftest import wait_for_status, wait_until

PUSH_DEADLINE_SECONDS = 1.0


@pytest.fixture(scope="module")
def two_realtimes(private: Infrastructure, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    quick = {"PULSE_REALTIME_HEARTBEAT_SECONDS": "0.5", "PULSE_REALTIME_STALE_AFTER_SECONDS": "3"}
    # The scheduler's outbox sweep publishes any send the gateway could not (a busy broker).
    with running_stack(
        private,
        tmp_path_factory.mktemp("realtime-e2e"),
        extra_env=quick,
        services=("api", "inapp_worker", "scheduler", "realtime"),
    ) as stack:
        stack.start_replica("realtime", "realtime_b")
        yield stack


@pytest.fixture(scope="module")
def client(two_realtimes: Stack, private: Infrastructure) -> Iterator[httpx.Client]:
    key = private.create_tenant_with_key(f"realtime-{uuid.uuid4().hex[:6]}", Scope.SEND, Scope.READ)
    with two_realtimes.client(key) as client:
        yield client


def _ws_url(stack: Stack, name: str, token: str) -> str:
    return f"{stack.realtime_url(name).replace('http', 'ws', 1)}/v1/ws?token={token}"


def _token(client: httpx.Client, user_id: str) -> str:
    response = client.post("/v1/auth/token", json={"user_id": user_id, "ttl_seconds": 600})
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


def test_a_send_through_the_gateway_reaches_the_user_on_the_other_process_within_a_second(
    two_realtimes: Stack, client: httpx.Client
) -> None:
    user_id = f"ada-{uuid.uuid4().hex[:8]}"
    with connect(_ws_url(two_realtimes, "realtime_b", _token(client, user_id)), open_timeout=10) as socket:
        assert json.loads(socket.recv(timeout=10)) == {"type": "missed_notifications", "items": []}

        response = client.post(
            "/v1/notifications",
            json={
                "channel": "inapp",
                "recipient": user_id,
                "priority": "high",
                "content": {"subject": "Build green", "body": "main passed", "data": {"build": 42}},
            },
        )
        assert response.status_code == 202, response.text
        message = json.loads(socket.recv(timeout=30))
        received_at = time.time()

    notification_id = response.json()["id"]
    assert message["type"] == "notification"
    item = message["notification"]
    assert (item["id"], item["subject"], item["body"], item["data"], item["priority"]) == (
        notification_id,
        "Build green",
        "main passed",
        {"build": 42},
        "high",
    )
    delivered = wait_for_status(client, notification_id, "delivered")
    pushed_after = received_at - datetime.fromisoformat(delivered["delivered_at"]).timestamp()
    print(f"\npushed {pushed_after:.3f} s after it was stored in the inbox")
    assert pushed_after < PUSH_DEADLINE_SECONDS


def test_presence_counts_both_processes_and_forgets_a_killed_one_once_its_rows_go_stale(
    two_realtimes: Stack, client: httpx.Client
) -> None:
    user_id = f"grace-{uuid.uuid4().hex[:8]}"
    token = _token(client, user_id)

    def presence() -> dict[str, object]:
        response = client.get(f"/v1/presence/{user_id}")
        assert response.status_code == 200, response.text
        body: dict[str, object] = response.json()
        return body

    assert presence() == {"online": False, "connections": 0, "last_seen_at": None}
    with (
        connect(_ws_url(two_realtimes, "realtime", token), open_timeout=10) as on_a,
        connect(_ws_url(two_realtimes, "realtime_b", token), open_timeout=10) as on_b,
    ):
        for socket in (on_a, on_b):
            assert json.loads(socket.recv(timeout=10))["type"] == "missed_notifications"
        both = presence()
        assert both["online"] is True and both["connections"] == 2 and both["last_seen_at"]

        two_realtimes.kill("realtime_b")  # SIGKILL: its row stays, and goes stale
        wait_until(
            lambda: presence()["connections"] == 1, timeout=30, what="the killed process's row to go stale"
        )
        assert presence()["online"] is True
        # The one on the live process still works.
        on_a.send(json.dumps({"type": "ping"}))
        assert json.loads(on_a.recv(timeout=10)) == {"type": "pong"}
        del on_b

    gone = wait_until(
        lambda: (p := presence())["connections"] == 0 and p, what="the last connection to close"
    )
    assert gone["online"] is False and gone["last_seen_at"] is not None
