"""End to end: a notification with a `callback_url` → its delivery or failure → a signed status event,
delivered by the webhook worker to the sandbox's receiver, which verifies the signature with the
tenant's secret. A failing callback is retried or dead-lettered; its parent never changes."""

import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from devtools.stack import Stack
from tests.conftest import Tenant, wait_for_status, wait_until


@pytest.fixture
def sandbox(stack: Stack) -> Iterator[httpx.Client]:
    with stack.sandbox() as client:
        yield client
        client.delete("/api/faults")
        client.post("/api/webhook-secret", json={"secret": None})


@pytest.fixture
def client(stack: Stack, tenant: Tenant, sandbox: httpx.Client) -> Iterator[httpx.Client]:
    """The tenant's API client; the sandbox verifies signatures with the tenant's secret."""
    with stack.client(tenant.api_key) as client:
        secret = client.get("/v1/webhook-secret").json()["secret"]
        sandbox.post("/api/webhook-secret", json={"secret": secret}).raise_for_status()
        yield client


def _callback_path() -> str:
    return f"/webhooks/status/{uuid.uuid4().hex[:8]}"


def _send_email(stack: Stack, client: httpx.Client, callback_path: str) -> str:
    response = client.post(
        "/v1/notifications",
        json={
            "channel": "email",
            "recipient": f"ada-{uuid.uuid4().hex[:8]}@example.com",
            "user_id": "user-42",
            "content": {"subject": "Your receipt", "body": "Thanks for your order."},
            "metadata": {"order": "A-1001"},
            "callback_url": stack.sandbox_url + callback_path,
        },
    )
    assert response.status_code == 202, response.text
    notification_id: str = response.json()["id"]
    return notification_id


def _fault(sandbox: httpx.Client, endpoint: str, status: int) -> None:
    """The endpoint's next request fails with `status`."""
    fault = {"endpoint": endpoint, "status": status, "fail_next": 1}
    sandbox.post("/api/faults", json=fault).raise_for_status()


def _received(sandbox: httpx.Client, path: str, timeout: float = 30) -> dict[str, Any]:
    """The one event the sandbox received at `path`, waiting for it."""

    def arrived() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = sandbox.get(
            "/api/messages", params={"channel": "webhook", "recipient": path}
        ).json()["items"]
        return items

    [message] = wait_until(arrived, timeout=timeout, what=f"a status event at {path}")
    return message


def _callback_of(client: httpx.Client, parent_id: str) -> dict[str, Any]:
    """The parent's callback, as GET /v1/notifications lists it."""
    items = client.get("/v1/notifications", params={"channel": "webhook", "limit": 200}).json()["items"]
    [callback] = [item for item in items if item["callback_for"] == parent_id]
    return callback


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_a_delivery_is_reported_by_a_signed_delivered_event(
    stack: Stack, client: httpx.Client, sandbox: httpx.Client
) -> None:
    path = _callback_path()
    parent_id = _send_email(stack, client, path)
    delivered = wait_for_status(client, parent_id, "delivered")
    message = _received(sandbox, path)

    assert message["headers"]["verified"] == "true"  # the sandbox checked the signature
    event = json.loads(message["body"])
    assert event["type"] == "notification.delivered"
    assert _instant(event["timestamp"]) == _instant(delivered["delivered_at"])
    data = event["data"]
    assert _instant(data.pop("delivered_at")) == _instant(delivered["delivered_at"])
    assert data == {
        "id": parent_id,
        "channel": "email",
        "priority": "normal",
        "recipient": delivered["recipient"],
        "user_id": "user-42",
        "status": "delivered",
        "attempt_count": 1,
        "failed_at": None,
        "read_at": None,
        "last_error": None,
        "metadata": {"order": "A-1001"},
    }
    latency = _instant(message["received_at"]) - _instant(delivered["delivered_at"])
    print(f"status callback latency (delivered → received): {latency.total_seconds():.3f}s")

    # The callback is a webhook notification of the tenant's, listed with `callback_for`; its id
    # is the event's webhook-id.
    callback = wait_for_status(client, _callback_of(client, parent_id)["id"], "delivered")
    assert message["headers"]["webhook-id"] == callback["id"]
    assert (callback["channel"], callback["recipient"]) == ("webhook", stack.sandbox_url + path)
    assert (callback["callback_for"], callback["callback_url"]) == (parent_id, None)
    assert callback["content"] == {
        "subject": "notification.delivered",
        "body": message["body"],
        "html": None,
        "data": None,
    }


def test_a_permanent_failure_is_reported_by_a_failed_event_with_the_error(
    stack: Stack, client: httpx.Client, sandbox: httpx.Client
) -> None:
    _fault(sandbox, "smtp", 550)
    path = _callback_path()
    parent_id = _send_email(stack, client, path)
    failed = wait_for_status(client, parent_id, "failed")
    message = _received(sandbox, path)

    assert message["headers"]["verified"] == "true"
    event = json.loads(message["body"])
    assert event["type"] == "notification.failed"
    data = event["data"]
    assert (data["id"], data["status"], data["delivered_at"]) == (parent_id, "failed", None)
    assert _instant(data["failed_at"]) == _instant(failed["failed_at"])
    assert "550" in data["last_error"]
    assert data["last_error"] == failed["last_error"]


def test_a_failing_receiver_gets_the_event_on_a_retry_and_the_notification_stays_delivered(
    stack: Stack, client: httpx.Client, sandbox: httpx.Client
) -> None:
    _fault(sandbox, "webhook", 503)
    path = _callback_path()
    parent_id = _send_email(stack, client, path)
    message = _received(sandbox, path)

    assert message["headers"]["verified"] == "true"
    assert json.loads(message["body"])["type"] == "notification.delivered"
    callback = wait_for_status(client, _callback_of(client, parent_id)["id"], "delivered")
    assert callback["attempt_count"] == 2
    assert "503" in callback["attempts"][0]["error"]
    assert message["headers"]["webhook-id"] == callback["id"]  # the same on every attempt
    assert message["repeats"] == 0
    parent = client.get(f"/v1/notifications/{parent_id}").json()
    assert (parent["status"], parent["attempt_count"], parent["last_error"]) == ("delivered", 1, None)


def test_a_refused_callback_is_dead_lettered_and_the_notification_stays_delivered(
    stack: Stack, client: httpx.Client, sandbox: httpx.Client
) -> None:
    _fault(sandbox, "webhook", 410)
    path = _callback_path()
    parent_id = _send_email(stack, client, path)
    wait_for_status(client, parent_id, "delivered")
    # The callback was written with the parent's status change.
    callback = wait_for_status(client, _callback_of(client, parent_id)["id"], "failed")

    assert "410" in callback["last_error"]
    dead = client.get("/v1/dead-letters", params={"channel": "webhook"}).json()["items"]
    assert [item["callback_for"] for item in dead if item["id"] == callback["id"]] == [parent_id]
    parent = client.get(f"/v1/notifications/{parent_id}").json()
    assert (parent["status"], parent["last_error"]) == ("delivered", None)
    # A callback reports on its parent only: its own failure is reported to no one.
    webhooks = client.get("/v1/notifications", params={"channel": "webhook"}).json()["items"]
    assert [item["id"] for item in webhooks if item["callback_for"] == callback["id"]] == []
