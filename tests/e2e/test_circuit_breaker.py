"""End to end: an SMTP relay that keeps failing opens the circuit; notifications wait instead of
burning their attempts, and go out once the relay recovers and a probe succeeds."""

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from devtools.stack import Stack, metric_value
from tests.conftest import Tenant, wait_until

SMTP_CIRCUIT = 'pulse_circuit_state{provider="smtp"}'


@pytest.fixture
def sandbox(stack: Stack) -> Iterator[httpx.Client]:
    with stack.sandbox() as client:
        yield client
        client.delete("/api/faults")


def test_a_failing_relay_opens_the_circuit_and_notifications_wait_for_it_to_close(
    stack: Stack, tenant: Tenant, sandbox: httpx.Client
) -> None:
    worker_metrics = stack.metrics_url("email_worker")
    sandbox.post("/api/faults", json={"endpoint": "smtp", "status": 421, "rate": 1.0}).raise_for_status()
    body = {"channel": "email", "priority": "critical", "content": {"subject": "s", "body": "b"}}
    with stack.client(tenant.api_key) as client:
        ids = [
            client.post(
                "/v1/notifications", json={**body, "recipient": f"cb-{uuid.uuid4().hex[:8]}@example.com"}
            ).json()["id"]
            for _ in range(3)
        ]
        wait_until(lambda: metric_value(worker_metrics, SMTP_CIRCUIT) == 1, what="the SMTP circuit to open")

        def postponed() -> bool:
            lines = (stack.log_dir / "email_worker.log").read_text().splitlines()
            events = [json.loads(line) for line in lines if line.startswith("{")]
            return any(
                e["message"].startswith("providers unavailable") and e["notification_id"] in ids
                for e in events
            )

        wait_until(postponed, what="a notification postponed while the circuit is open")
        sandbox.delete("/api/faults").raise_for_status()

        finished = [
            wait_until(
                lambda notification_id=notification_id: (
                    (found := client.get(f"/v1/notifications/{notification_id}").json())["status"]
                    == "delivered"
                    and found
                ),
                timeout=30,
                what="delivery after the relay recovered",
            )
            for notification_id in ids
        ]

    # The secondary relay may have delivered them; then later sends probe and close the primary's circuit.
    with stack.client(tenant.api_key) as client:

        def closed() -> bool:
            probe = {**body, "recipient": f"cb-{uuid.uuid4().hex[:8]}@example.com"}
            notification_id = client.post("/v1/notifications", json=probe).json()["id"]
            wait_until(
                lambda: client.get(f"/v1/notifications/{notification_id}").json()["status"] == "delivered",
                what="the probe's delivery",
            )
            return metric_value(worker_metrics, SMTP_CIRCUIT) == 0

        wait_until(closed, what="the SMTP circuit to close")
    # Critical notifications get 6 attempts; the open circuit kept them from using them up.
    assert all(notification["attempt_count"] < 6 for notification in finished)
