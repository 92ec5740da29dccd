"""End to end: gateway → RabbitMQ → webhook worker → the sandbox's webhook receiver, signed per
Standard Webhooks with the tenant's secret; retries keep the webhook-id; the SSRF guard at the gateway."""

import uuid
from collections.abc import Iterator

import httpx
import pytest
from standardwebhooks import Webhook

from devtools.stack import Stack
from tests.conftest import Tenant, wait_for_status


@pytest.fixture
def sandbox(stack: Stack) -> Iterator[httpx.Client]:
    with stack.sandbox() as client:
        yield client
        client.delete("/api/faults")


def _path() -> str:
    return f"/webhooks/orders/{uuid.uuid4().hex[:8]}"


def _send(client: httpx.Client, url: str, body: str = "Order A-1001 shipped") -> str:
    content = {"subject": "Shipped", "body": body, "data": {"order": "A-1001"}}
    response = client.post(
        "/v1/notifications", json={"channel": "webhook", "recipient": url, "content": content}
    )
    assert response.status_code == 202, response.text
    notification_id: str = response.json()["id"]
    return notification_id


def _received(sandbox: httpx.Client, path: str) -> list[dict]:
    params = {"channel": "webhook", "recipient": path}
    items: list[dict] = sandbox.get("/api/messages", params=params).json()["items"]
    return items


def _secret(client: httpx.Client, rotate: bool = False) -> str:
    response = client.post("/v1/webhook-secret/rotate") if rotate else client.get("/v1/webhook-secret")
    assert response.status_code == 200, response.text
    secret: str = response.json()["secret"]
    assert secret.startswith("whsec_")
    return secret


def test_a_webhook_arrives_signed_with_the_tenant_secret_and_rotation_changes_it(
    stack: Stack, tenant: Tenant, sandbox: httpx.Client
) -> None:
    with stack.client(tenant.api_key) as client:
        secret = _secret(client)
        assert _secret(client) == secret  # created once, then stable
        path = _path()
        notification_id = _send(client, stack.sandbox_url + path)
        delivered = wait_for_status(client, notification_id, "delivered")
        [message] = _received(sandbox, path)
        assert message["headers"]["webhook-id"] == notification_id
        payload = Webhook(secret).verify(message["body"], message["headers"])
        assert payload["id"] == notification_id
        assert payload["data"] == {
            "subject": "Shipped",
            "body": "Order A-1001 shipped",
            "data": {"order": "A-1001"},
        }
        assert (delivered["attempt_count"], delivered["attempts"][0]["provider"]) == (1, "webhook")

        rotated = _secret(client, rotate=True)
        assert rotated != secret
        assert _secret(client) == rotated
        path = _path()
        wait_for_status(client, _send(client, stack.sandbox_url + path), "delivered")
        [message] = _received(sandbox, path)
        Webhook(rotated).verify(message["body"], message["headers"])
        with pytest.raises(Exception, match="signature"):
            Webhook(secret).verify(message["body"], message["headers"])


def test_a_503_is_retried_with_the_same_webhook_id_and_a_410_fails(
    stack: Stack, tenant: Tenant, sandbox: httpx.Client
) -> None:
    with stack.client(tenant.api_key) as client:
        secret = _secret(client)
        sandbox.post("/api/faults", json={"endpoint": "webhook", "status": 503, "fail_next": 1})
        path = _path()
        notification_id = _send(client, stack.sandbox_url + path)
        delivered = wait_for_status(client, notification_id, "delivered")
        assert delivered["attempt_count"] == 2
        assert "503" in delivered["attempts"][0]["error"]
        [message] = _received(sandbox, path)
        assert message["headers"]["webhook-id"] == notification_id
        Webhook(secret).verify(message["body"], message["headers"])

        sandbox.post("/api/faults", json={"endpoint": "webhook", "status": 410, "fail_next": 1})
        path = _path()
        failed = wait_for_status(client, _send(client, stack.sandbox_url + path), "failed")
        assert failed["attempt_count"] == 1
        assert "webhook answered 410" in failed["last_error"]
        assert _received(sandbox, path) == []


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://10.0.0.1/hook", "SSRF guard"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("ftp://example.com/hook", "http and https"),
    ],
)
def test_refused_urls_are_422_at_the_gateway(stack: Stack, tenant: Tenant, url: str, reason: str) -> None:
    with stack.client(tenant.api_key) as client:
        response = client.post(
            "/v1/notifications", json={"channel": "webhook", "recipient": url, "content": {"body": "x"}}
        )
    assert response.status_code == 422, response.text
    problem = response.json()
    assert reason in response.text
    assert any(error["loc"] == ["body", "recipient"] for error in problem["errors"]), problem


def test_the_secret_needs_the_admin_scope(stack: Stack, make_tenant) -> None:  # type: ignore[no-untyped-def]
    sender = make_tenant(scopes="send,read")
    with stack.client(sender.api_key) as client:
        assert client.get("/v1/webhook-secret").status_code == 403
        assert client.post("/v1/webhook-secret/rotate").status_code == 403
    with httpx.Client(base_url=stack.api_url) as anonymous:
        assert anonymous.get("/v1/webhook-secret").status_code == 401
