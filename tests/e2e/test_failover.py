"""End to end: every channel's secondary provider and circuit breakers.

Email and push fail over from the primary (SMTP relay, FCM project) to the secondary within one
attempt; the FCM and webhook circuits open under repeated transient failures and close again once the
provider recovers. (SMS has the same tests in test_sms.py, the SMTP circuit in test_circuit_breaker.py.)
"""

import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from devtools.stack import Stack, metric_value
from tests.conftest import PRIMARY_FCM_PROJECT, Tenant, wait_for_status, wait_until
from tests.e2e.test_email_delivery import _email, _messages_to
from tests.e2e.test_push import _device_token, _messages, _push
from tests.e2e.test_webhooks import _path, _received
from tests.e2e.test_webhooks import _send as _send_webhook

FCM_CIRCUIT = 'pulse_circuit_state{provider="fcm"}'
WEBHOOK_CIRCUIT = 'pulse_circuit_state{provider="webhook"}'


@pytest.fixture
def sandbox(stack: Stack) -> Iterator[httpx.Client]:
    with stack.sandbox() as client:
        yield client
        client.delete("/api/faults")


def _accepted(client: httpx.Client, notification: dict) -> str:
    response = client.post("/v1/notifications", json=notification)
    assert response.status_code == 202, response.text
    notification_id: str = response.json()["id"]
    return notification_id


def _critical_push(client: httpx.Client) -> str:
    # Critical: the most attempts, so that none runs out while both providers fail.
    return _accepted(client, {**_push(_device_token()), "priority": "critical"})


def test_a_failing_primary_smtp_relay_fails_over_to_the_secondary_within_the_attempt(
    stack: Stack, tenant: Tenant, sandbox: httpx.Client
) -> None:
    recipient = f"failover-{uuid.uuid4().hex[:8]}@example.com"
    fault = {"endpoint": "smtp", "status": 421, "fail_next": 1, "account": "primary"}
    sandbox.post("/api/faults", json=fault).raise_for_status()
    with stack.client(tenant.api_key) as client:
        delivered = wait_for_status(client, _accepted(client, _email(recipient)), "delivered")

    assert delivered["attempt_count"] == 1
    [attempt] = delivered["attempts"]
    assert (attempt["outcome"], attempt["provider"]) == ("delivered", "smtp-secondary")
    [message] = _messages_to(sandbox, recipient)
    assert message["provider"] == "smtp-secondary"


def test_a_failing_primary_fcm_project_fails_over_to_the_secondary_within_the_attempt(
    stack: Stack, tenant: Tenant, sandbox: httpx.Client
) -> None:
    token = _device_token()
    fault = {"endpoint": "fcm", "status": 503, "fail_next": 1, "account": PRIMARY_FCM_PROJECT}
    sandbox.post("/api/faults", json=fault).raise_for_status()
    with stack.client(tenant.api_key) as client:
        delivered = wait_for_status(client, _accepted(client, _push(token)), "delivered")

    assert delivered["attempt_count"] == 1
    [attempt] = delivered["attempts"]
    assert (attempt["outcome"], attempt["provider"]) == ("delivered", "fcm-secondary")
    assert len(_messages(sandbox, token)) == 1


def _wait_for_closure(
    stack: Stack, worker: str, circuit: str, probe: Callable[[], None], provider: str
) -> None:
    """After the cooldown (2 s in tests) the next send is the probe that closes the circuit."""
    metrics = stack.metrics_url(worker)

    def closed() -> bool:
        probe()
        return metric_value(metrics, circuit) == 0

    wait_until(closed, timeout=30, what=f"the {provider} circuit to close")


def test_the_fcm_circuit_opens_when_both_projects_fail_and_closes_once_fcm_recovers(
    stack: Stack, tenant: Tenant, sandbox: httpx.Client
) -> None:
    worker_metrics = stack.metrics_url("push_worker")
    # No account: the primary and the secondary project both fail, so notifications have to wait.
    sandbox.post("/api/faults", json={"endpoint": "fcm", "status": 503, "rate": 1.0}).raise_for_status()
    with stack.client(tenant.api_key) as client:
        waiting = [_critical_push(client) for _ in range(3)]
        wait_until(lambda: metric_value(worker_metrics, FCM_CIRCUIT) == 1, what="the fcm circuit to open")
        sandbox.delete("/api/faults").raise_for_status()

        for notification_id in waiting:
            delivered = wait_for_status(client, notification_id, "delivered")
            assert delivered["attempt_count"] < 6  # the open circuits kept them from using up their attempts

        def probe() -> None:
            wait_for_status(client, _critical_push(client), "delivered")

        _wait_for_closure(stack, "push_worker", FCM_CIRCUIT, probe, "fcm")
        [attempt] = wait_for_status(client, _critical_push(client), "delivered")["attempts"]
        assert attempt["provider"] == "fcm"


def test_the_webhook_circuit_opens_under_failures_and_closes_once_receivers_recover(
    stack: Stack, tenant: Tenant, sandbox: httpx.Client
) -> None:
    worker_metrics = stack.metrics_url("webhook_worker")
    sandbox.post("/api/faults", json={"endpoint": "webhook", "status": 503, "rate": 1.0}).raise_for_status()
    with stack.client(tenant.api_key) as client:
        paths = [_path() for _ in range(3)]
        waiting = [_send_webhook(client, stack.sandbox_url + path) for path in paths]
        wait_until(
            lambda: metric_value(worker_metrics, WEBHOOK_CIRCUIT) == 1, what="the webhook circuit to open"
        )
        sandbox.delete("/api/faults").raise_for_status()

        for notification_id in waiting:
            wait_for_status(client, notification_id, "delivered")
        for path in paths:
            assert len(_received(sandbox, path)) == 1

        def probe() -> None:
            wait_for_status(client, _send_webhook(client, stack.sandbox_url + _path()), "delivered")

        _wait_for_closure(stack, "webhook_worker", WEBHOOK_CIRCUIT, probe, "webhook")
