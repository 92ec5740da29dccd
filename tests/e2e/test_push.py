"""End to end: gateway → RabbitMQ → push worker → FCM's HTTP v1 API (the sandbox), including a
device token FCM reports as unregistered, which the gateway then refuses."""

import secrets
from collections.abc import Iterator

import httpx
import pytest

from devtools.stack import Stack
from tests.conftest import Tenant, wait_for_status, wait_until
from tests.e2e.test_email_delivery import _dead_lettered_ids


@pytest.fixture
def sandbox(stack: Stack) -> Iterator[httpx.Client]:
    with stack.sandbox() as client:
        yield client
        client.delete("/api/faults")


def _device_token() -> str:
    return f"fcm-{secrets.token_hex(16)}:APA91b{secrets.token_urlsafe(24)}"


def _push(recipient: str, body: str = "Your order has shipped") -> dict:
    return {
        "channel": "push",
        "recipient": recipient,
        "content": {"subject": "Order A-1001", "body": body, "data": {"order": "A-1001", "items": 3}},
    }


def _send(client: httpx.Client, recipient: str) -> str:
    response = client.post("/v1/notifications", json=_push(recipient))
    assert response.status_code == 202, response.text
    notification_id: str = response.json()["id"]
    return notification_id


def _messages(sandbox: httpx.Client, recipient: str) -> list[dict]:
    params = {"channel": "push", "recipient": recipient}
    items: list[dict] = sandbox.get("/api/messages", params=params).json()["items"]
    return items


def test_a_push_notification_arrives_and_is_marked_delivered(
    stack: Stack, tenant: Tenant, sandbox: httpx.Client
) -> None:
    token = _device_token()
    with stack.client(tenant.api_key) as client:
        delivered = wait_for_status(client, _send(client, token), "delivered")

    [attempt] = delivered["attempts"]
    assert (attempt["outcome"], attempt["provider"]) == ("delivered", "fcm")
    [message] = _messages(sandbox, token)
    assert (message["provider"], message["subject"], message["body"]) == (
        "fcm",
        "Order A-1001",
        "Your order has shipped",
    )
    assert message["headers"] == {"order": "A-1001", "items": "3"}  # FCM data values are strings


@pytest.mark.parametrize("recipient", ["", "has space", "tab\there", "x" * 4097])
def test_the_gateway_refuses_what_cannot_be_a_device_token(
    stack: Stack, tenant: Tenant, recipient: str
) -> None:
    with stack.client(tenant.api_key) as client:
        response = client.post("/v1/notifications", json=_push(recipient))
    assert response.status_code == 422, response.text
    assert [error["loc"] for error in response.json()["errors"]] == [["body", "recipient"]]


def test_an_unregistered_token_fails_and_is_then_refused_by_the_gateway(
    stack: Stack, tenant: Tenant, sandbox: httpx.Client
) -> None:
    token = f"invalid-{secrets.token_hex(8)}"
    with stack.client(tenant.api_key) as client:
        notification_id = _send(client, token)
        failed = wait_for_status(client, notification_id, "failed")
        assert "FCM 404 (UNREGISTERED)" in failed["last_error"]
        [attempt] = failed["attempts"]
        assert (attempt["outcome"], attempt["provider"]) == ("failed", "fcm")

        # The worker records the token after the failure; the gateway refuses it from then on.
        def refused() -> httpx.Response | None:
            response = client.post("/v1/notifications", json=_push(token))
            return response if response.status_code == 422 else None

        response = wait_until(refused, timeout=10, what="the gateway to refuse the token")
    body = response.json()
    assert "device token was reported invalid by FCM at" in body["detail"]
    assert [error["loc"] for error in body["errors"]] == [["body", "recipient"]]
    assert _messages(sandbox, token) == []
    wait_until(
        lambda: notification_id in _dead_lettered_ids(stack.infrastructure.broker_url, "pulse.push.dead"),
        timeout=10,
        what="the message in pulse.push.dead",
    )


def test_an_unavailable_fcm_is_retried_then_delivered(
    stack: Stack, tenant: Tenant, sandbox: httpx.Client
) -> None:
    token = _device_token()
    # Two failures: the primary project's and then the secondary's, so that the attempt fails.
    sandbox.post("/api/faults", json={"endpoint": "fcm", "status": 503, "fail_next": 2}).raise_for_status()
    with stack.client(tenant.api_key) as client:
        delivered = wait_for_status(client, _send(client, token), "delivered")

    assert delivered["attempt_count"] == 2
    first, second = delivered["attempts"]
    # Both failed; the attempt names the last provider tried.
    assert (first["outcome"], first["provider"]) == ("failed", "fcm-secondary")
    assert "FCM 503 (UNAVAILABLE)" in first["error"]
    assert (second["outcome"], second["provider"]) == ("delivered", "fcm")
    assert len(_messages(sandbox, token)) == 1
