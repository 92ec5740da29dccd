"""End to end: gateway → PostgreSQL + outbox → RabbitMQ → email worker → SMTP (the sandbox)."""

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from kombu import Connection
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from devtools.stack import Stack, metric_value
from pulse.db import transaction
from pulse.db.models import Notification
from pulse.messaging.publisher import ConfirmedPublisher, TaskMessage
from pulse.notifications.schemas import NotificationRequest
from pulse.notifications.service import accept_notification
from tests.conftest import Tenant, wait_for_status, wait_until


@pytest.fixture
def sandbox(stack: Stack) -> Iterator[httpx.Client]:
    with stack.sandbox() as client:
        yield client
        client.delete("/api/faults")


def _email(recipient: str, **content: str) -> dict[str, object]:
    return {
        "channel": "email",
        "recipient": recipient,
        "content": {"subject": "Your receipt", "body": "Thanks for your order.", **content},
    }


def _messages_to(sandbox: httpx.Client, recipient: str) -> list[dict[str, object]]:
    items: list[dict[str, object]] = sandbox.get("/api/messages", params={"recipient": recipient}).json()[
        "items"
    ]
    return items


def test_an_accepted_email_arrives_and_is_marked_delivered(
    stack: Stack, tenant: Tenant, sandbox: httpx.Client
) -> None:
    recipient = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    with stack.client(tenant.api_key) as client:
        response = client.post(
            "/v1/notifications", json=_email(recipient, html="<p>Thanks for your order.</p>")
        )
        assert response.status_code == 202, response.text
        notification_id = response.json()["id"]

        delivered = wait_for_status(client, notification_id, "delivered")

    assert delivered["attempt_count"] == 1
    [attempt] = delivered["attempts"]  # type: ignore[misc]
    assert attempt["outcome"] == "delivered"
    assert attempt["provider"] == "smtp"
    assert delivered["delivered_at"] is not None
    [message] = _messages_to(sandbox, recipient)
    assert message["subject"] == "Your receipt"
    assert message["body"].strip() == "Thanks for your order."  # type: ignore[union-attr]
    assert message["html"].strip() == "<p>Thanks for your order.</p>"  # type: ignore[union-attr]
    assert message["headers"]["Message-ID"] == f"<{notification_id}@pulse.localhost>"  # type: ignore[index]
    assert attempt["details"] == {"message_id": message["headers"]["Message-ID"]}  # type: ignore[index]


def test_a_permanent_smtp_refusal_fails_the_notification_into_the_dead_letter_queue(
    stack: Stack, tenant: Tenant, sandbox: httpx.Client
) -> None:
    recipient = f"bounce-{uuid.uuid4().hex[:8]}@example.com"
    sandbox.post("/api/faults", json={"endpoint": "smtp", "status": 550, "fail_next": 1}).raise_for_status()
    with stack.client(tenant.api_key) as client:
        notification_id = client.post("/v1/notifications", json=_email(recipient)).json()["id"]
        failed = wait_for_status(client, notification_id, "failed")

    assert "550" in str(failed["last_error"])
    [attempt] = failed["attempts"]  # type: ignore[misc]
    assert attempt["outcome"] == "failed"
    assert attempt["details"] == {}
    assert _messages_to(sandbox, recipient) == []
    wait_until(
        lambda: notification_id in _dead_lettered_ids(stack.infrastructure.broker_url, "pulse.email.dead"),
        timeout=10,
        what="the message in pulse.email.dead",
    )


def _dead_lettered_ids(broker_url: str, queue: str) -> list[str]:
    """Notification ids of the messages in a dead-letter queue (peeked at, left in place)."""
    ids = []
    with Connection(broker_url) as connection:
        channel = connection.channel()
        while (message := channel.basic_get(queue, no_ack=False)) is not None:
            task_args, _kwargs, _embed = json.loads(message.body)
            ids.extend(task_args)
        channel.close()  # Unacknowledged messages go back to the queue.
    return ids


def test_a_transient_smtp_failure_is_retried_after_a_backoff_and_then_delivered(
    stack: Stack, tenant: Tenant, sandbox: httpx.Client
) -> None:
    recipient = f"greylisted-{uuid.uuid4().hex[:8]}@example.com"
    # Two failures: the primary relay's and then the secondary's, so that the attempt fails.
    sandbox.post("/api/faults", json={"endpoint": "smtp", "status": 451, "fail_next": 2}).raise_for_status()
    with stack.client(tenant.api_key) as client:
        notification_id = client.post("/v1/notifications", json=_email(recipient)).json()["id"]
        retrying = wait_for_status(client, notification_id, "retrying")
        delivered = wait_for_status(client, notification_id, "delivered")

    assert retrying["next_attempt_at"] is not None
    assert "451" in str(retrying["last_error"])
    first, second = delivered["attempts"]  # type: ignore[misc]
    assert (first["outcome"], second["outcome"]) == ("failed", "delivered")
    # It came back through delayed delivery (at least a second later), not straight from its queue.
    waited = datetime.fromisoformat(second["started_at"]) - datetime.fromisoformat(first["finished_at"])
    assert waited >= timedelta(seconds=0.9)
    assert delivered["last_error"] is None and delivered["next_attempt_at"] is None
    assert len(_messages_to(sandbox, recipient)) == 1


def test_a_notification_that_keeps_failing_is_dead_lettered_after_its_priority_s_attempts(
    stack: Stack, tenant: Tenant, sandbox: httpx.Client
) -> None:
    recipient = f"down-{uuid.uuid4().hex[:8]}@example.com"
    sandbox.post("/api/faults", json={"endpoint": "smtp", "status": 421, "rate": 1.0}).raise_for_status()
    with stack.client(tenant.api_key) as client:
        notification_id = client.post(
            "/v1/notifications", json={**_email(recipient), "priority": "low"}
        ).json()["id"]
        failed = wait_for_status(client, notification_id, "failed")

    assert [attempt["outcome"] for attempt in failed["attempts"]] == ["failed"] * 3  # type: ignore[union-attr]
    assert failed["failed_at"] is not None
    wait_until(
        lambda: notification_id in _dead_lettered_ids(stack.infrastructure.broker_url, "pulse.email.dead"),
        timeout=10,
        what="the message in pulse.email.dead",
    )


def _accept_without_publishing(
    session: Session, tenant: Tenant, recipient: str, *, sweep_after: timedelta
) -> uuid.UUID:
    """What the gateway commits before publishing; the sweep takes the outbox row after `sweep_after`."""
    accepted = accept_notification(
        session,
        tenant_id=tenant.id,
        request=NotificationRequest.model_validate(_email(recipient)),
        publish_grace=sweep_after,
    )
    return accepted.notification.id


def test_a_notification_whose_publish_never_happened_is_published_by_the_outbox_sweep(
    stack: Stack, tenant: Tenant, session_factory: sessionmaker[Session], sandbox: httpx.Client
) -> None:
    """Simulates a gateway killed between commit and publish: only the outbox row exists."""
    recipient = f"sweep-{uuid.uuid4().hex[:8]}@example.com"
    with transaction(session_factory) as session:
        notification_id = _accept_without_publishing(session, tenant, recipient, sweep_after=timedelta(0))
    with stack.client(tenant.api_key) as client:
        wait_for_status(client, str(notification_id), "delivered")
    assert len(_messages_to(sandbox, recipient)) == 1


def test_a_claim_left_by_a_killed_worker_expires_and_the_notification_is_delivered(
    stack: Stack, tenant: Tenant, session_factory: sessionmaker[Session], sandbox: httpx.Client
) -> None:
    """Simulates a worker killed mid-send: the row is `sending` with a lease that has run out."""
    recipient = f"lease-{uuid.uuid4().hex[:8]}@example.com"
    with transaction(session_factory) as session:
        # No sweep: the dead worker had already received the message.
        notification_id = _accept_without_publishing(
            session, tenant, recipient, sweep_after=timedelta(hours=1)
        )
        session.execute(
            update(Notification)
            .where(Notification.id == notification_id)
            .values(status="sending", attempt_count=1, claimed_until=datetime.now(UTC) - timedelta(seconds=1))
        )
    with stack.client(tenant.api_key) as client:
        delivered = wait_for_status(client, str(notification_id), "delivered")

    lost, succeeded = delivered["attempts"]  # type: ignore[misc]
    assert (lost["outcome"], succeeded["outcome"]) == ("failed", "delivered")
    assert "claim expired" in lost["error"]
    assert len(_messages_to(sandbox, recipient)) == 1


def test_a_duplicated_message_does_not_send_twice(
    stack: Stack, tenant: Tenant, task_publisher: ConfirmedPublisher, sandbox: httpx.Client
) -> None:
    recipient = f"twice-{uuid.uuid4().hex[:8]}@example.com"
    skipped = 'pulse_deliveries_skipped_total{channel="email"}'
    with stack.client(tenant.api_key) as client:
        notification_id = client.post("/v1/notifications", json=_email(recipient)).json()["id"]
        wait_for_status(client, notification_id, "delivered")
        skipped_before = metric_value(stack.metrics_url("email_worker"), skipped)

        for _ in range(2):
            task_publisher.publish([TaskMessage(uuid.UUID(notification_id), "email.normal")])
        wait_until(
            lambda: metric_value(stack.metrics_url("email_worker"), skipped) >= skipped_before + 2,
            what="the worker to consume both duplicates",
        )
        again = client.get(f"/v1/notifications/{notification_id}").json()

    assert again["attempt_count"] == 1
    assert len(_messages_to(sandbox, recipient)) == 1
