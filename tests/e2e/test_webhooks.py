"""End to end: gateway → RabbitMQ → webhook worker → the sandbox's webhook receiver, signed per
Standard Webhooks with the tenant's secret; retries keep the webhook-id; the SSRF guard at the gateway
and in the worker; receivers that fail or misbehave hold up nobody else."""

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, update
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook, WebhookVerificationError

from devtools.stack import Stack
from pulse.db import transaction
from pulse.db.models import Tenant as TenantRow
from tests.conftest import Tenant, wait_for_status, wait_until


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


def test_a_webhook_arrives_signed_with_the_tenant_secret(
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


def test_after_a_rotation_receivers_verify_with_either_secret_until_the_grace_period_ends(
    stack: Stack, tenant: Tenant, sandbox: httpx.Client, session_factory: sessionmaker[Session]
) -> None:
    with stack.client(tenant.api_key) as client:
        old = _secret(client)
        rotated = _secret(client, rotate=True)
        assert rotated != old
        assert _secret(client) == rotated

        # Within the grace period (24 h): signed with both, the new secret first.
        path = _path()
        wait_for_status(client, _send(client, stack.sandbox_url + path), "delivered")
        [message] = _received(sandbox, path)
        assert Webhook(rotated).verify(message["body"], message["headers"])["data"]["body"]
        Webhook(old).verify(message["body"], message["headers"])  # a receiver not switched yet
        first, second = message["headers"]["webhook-signature"].split(" ")
        assert first.startswith("v1,") and second.startswith("v1,")

        # Status callbacks are signed alike.
        callback_path = _path()
        response = client.post(
            "/v1/notifications",
            json={
                "channel": "email",
                "recipient": "ada@example.com",
                "content": {"subject": "Receipt", "body": "Thanks"},
                "callback_url": stack.sandbox_url + callback_path,
            },
        )
        assert response.status_code == 202, response.text
        [event] = wait_until(lambda: _received(sandbox, callback_path), what="the status callback")
        Webhook(old).verify(event["body"], event["headers"])
        Webhook(rotated).verify(event["body"], event["headers"])

        # The grace period over (the rotation moved 25 h back): the new secret only.
        with transaction(session_factory) as session:
            session.execute(
                update(TenantRow)
                .where(TenantRow.id == tenant.id)
                .values(webhook_secret_rotated_at=func.now() - timedelta(hours=25))
            )
        path = _path()
        wait_for_status(client, _send(client, stack.sandbox_url + path), "delivered")
        [message] = _received(sandbox, path)
        Webhook(rotated).verify(message["body"], message["headers"])
        assert " " not in message["headers"]["webhook-signature"]
        with pytest.raises(WebhookVerificationError):
            Webhook(old).verify(message["body"], message["headers"])


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


def _postponed(stack: Stack, notification_id: str) -> bool:
    """Whether the webhook worker postponed the notification for an open circuit."""
    lines = (stack.log_dir / "webhook_worker.log").read_text().splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    return any(
        event.get("notification_id") == notification_id
        and event["message"].startswith("providers unavailable")
        for event in events
    )


def test_a_tenants_failing_receiver_holds_up_only_the_webhooks_to_it(
    stack: Stack, make_tenant: Callable[..., Tenant], sandbox: httpx.Client
) -> None:
    broken = f"broken-{uuid.uuid4().hex[:8]}"
    fault = {"endpoint": "webhook", "status": 503, "rate": 1.0, "account": broken}
    sandbox.post("/api/faults", json=fault).raise_for_status()
    failing, bystander = make_tenant(), make_tenant()
    with stack.client(failing.api_key) as client:
        failed = [_send(client, f"{stack.sandbox_url}/webhooks/{broken}") for _ in range(3)]
        # Three failures in a row open the circuit in the test stack (for a 2 s cooldown).
        wait_until(
            lambda: all(client.get(f"/v1/notifications/{n}").json()["status"] == "retrying" for n in failed),
            what="three failed attempts",
        )
        same_receiver = _send(client, stack.sandbox_url + _path())
        with stack.client(bystander.api_key) as other:
            unaffected = wait_for_status(other, _send(other, stack.sandbox_url + _path()), "delivered")
        wait_until(lambda: _postponed(stack, same_receiver), what="the failing tenant's webhook to wait")
        sandbox.delete("/api/faults").raise_for_status()
        waited = wait_for_status(client, same_receiver, "delivered")

    # Another tenant's webhook to the same host went at once; the failing tenant's other webhook to
    # its receiver waited for the circuit, without using up an attempt.
    assert unaffected["attempt_count"] == 1
    assert not _postponed(stack, unaffected["id"])
    assert waited["attempt_count"] == 1


def test_a_receiver_dripping_its_answer_holds_a_worker_only_until_the_deadline(
    stack: Stack, tenant: Tenant, sandbox: httpx.Client
) -> None:
    path = _path()
    # The body comes a byte every 0.2 s for 20 s; the stack's claim lease is 2 s, its deadline 1 s.
    fault = {"endpoint": "webhook", "answer": "drip", "account": path.removeprefix("/webhooks/")}
    sandbox.post("/api/faults", json=fault).raise_for_status()
    with stack.client(tenant.api_key) as client:
        delivered = wait_for_status(client, _send(client, stack.sandbox_url + path), "delivered", timeout=10)

    # Held past its lease, the claim would have been recovered and the webhook sent a second time.
    assert delivered["attempt_count"] == 1
    [message] = _received(sandbox, path)
    assert message["repeats"] == 0


def test_a_webhook_cannot_reach_the_other_services_on_the_sandboxs_host(stack: Stack, tenant: Tenant) -> None:
    # The stack, like `make run`, allowlists the sandbox's port only.
    metrics = f"{stack.ports['webhook_worker_metrics']}/metrics"
    with stack.client(tenant.api_key) as client:
        literal = {"channel": "webhook", "recipient": f"http://127.0.0.1:{metrics}", "content": {"body": "x"}}
        response = client.post("/v1/notifications", json=literal)
        assert response.status_code == 422, response.text
        assert "loopback" in response.text
        # A name is only resolved by the worker, which refuses it.
        failed = wait_for_status(client, _send(client, f"http://localhost:{metrics}"), "failed")
    assert "refused by the SSRF guard" in failed["last_error"]
    assert failed["attempt_count"] == 1
