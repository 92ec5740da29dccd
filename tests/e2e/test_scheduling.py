"""End to end: send_at, quiet hours, cancel, force, and two schedulers releasing without duplicates."""

import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from devtools.stack import REPO, Stack, free_port, metric_value
from pulse.db import transaction
from pulse.messaging.publisher import ConfirmedPublisher, TaskMessage
from pulse.notifications.schemas import NotificationRequest
from pulse.notifications.service import accept_notification
from pulse.tenants.service import configure_tenant
from tests.conftest import Tenant, wait_for_status, wait_until

RELEASED = "pulse_scheduled_released_total"


@pytest.fixture
def client(stack: Stack, tenant: Tenant) -> Iterator[httpx.Client]:
    with stack.client(tenant.api_key) as client:
        yield client


def _email(**fields: Any) -> dict[str, Any]:
    return {
        "channel": "email",
        "recipient": f"sched-{uuid.uuid4().hex[:8]}@example.com",
        "content": {"subject": "Reminder", "body": "Your appointment is tomorrow."},
        **fields,
    }


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_send_two_seconds_ahead_is_scheduled_and_delivered_on_time(client: httpx.Client) -> None:
    send_at = datetime.now(UTC) + timedelta(seconds=2)
    accepted = client.post("/v1/notifications", json=_email(send_at=send_at.isoformat()))
    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    assert body["status"] == "scheduled"
    assert _instant(body["scheduled_for"]) == send_at

    delivered = wait_for_status(client, body["id"], "delivered", timeout=15)

    delivered_at = _instant(delivered["delivered_at"])
    assert send_at <= delivered_at < send_at + timedelta(seconds=2)


def test_a_naive_send_at_is_read_in_the_given_time_zone(client: httpx.Client) -> None:
    body = client.post(
        "/v1/notifications", json=_email(send_at="2030-01-07T09:00:00", timezone="America/New_York")
    ).json()

    assert body["status"] == "scheduled"
    assert _instant(body["scheduled_for"]) == datetime(2030, 1, 7, 14, 0, tzinfo=UTC)
    assert body["local_scheduled_time"] == "2030-01-07T09:00:00-05:00"
    assert body["timezone"] == "America/New_York"
    client.post(f"/v1/notifications/{body['id']}/cancel").raise_for_status()


def test_a_send_at_in_the_past_is_sent_now(client: httpx.Client) -> None:
    body = client.post("/v1/notifications", json=_email(send_at="2020-01-01T00:00:00Z")).json()

    assert body["scheduled_for"] is None
    wait_for_status(client, body["id"], "delivered", timeout=15)


def test_an_unknown_time_zone_is_a_422_naming_the_field(client: httpx.Client) -> None:
    response = client.post(
        "/v1/notifications", json=_email(send_at="2030-01-01T09:00:00", timezone="Mars/Olympus")
    )

    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["errors"]] == [["body", "timezone"]]


@pytest.fixture
def quiet_tenant(make_tenant: Callable[..., Tenant], session_factory: sessionmaker[Session]) -> Tenant:
    """A tenant whose quiet hours (UTC) began a minute ago and end 3 seconds from now."""
    tenant = make_tenant()
    now = datetime.now(UTC)
    window = f"{(now - timedelta(minutes=1)):%H:%M:%S}-{(now + timedelta(seconds=3)):%H:%M:%S}"
    with transaction(session_factory) as session:
        configure_tenant(session, name=tenant.name, timezone="UTC", quiet_hours=window)
    return tenant


def test_a_send_in_quiet_hours_waits_for_the_window_to_end(stack: Stack, quiet_tenant: Tenant) -> None:
    with stack.client(quiet_tenant.api_key) as client:
        body = client.post("/v1/notifications", json=_email()).json()
        assert (body["status"], body["deferred_reason"]) == ("scheduled", "quiet_hours")
        window_end = _instant(body["scheduled_for"])
        assert datetime.now(UTC) < window_end <= datetime.now(UTC) + timedelta(seconds=3)

        delivered = wait_for_status(client, body["id"], "delivered", timeout=15)

    assert _instant(delivered["delivered_at"]) >= window_end


@pytest.mark.parametrize("bypass", [{"priority": "critical"}, {"respect_quiet_hours": False}])
def test_critical_or_opted_out_sends_ignore_quiet_hours(
    stack: Stack, quiet_tenant: Tenant, bypass: dict[str, Any]
) -> None:
    with stack.client(quiet_tenant.api_key) as client:
        body = client.post("/v1/notifications", json=_email(**bypass)).json()
        assert (body["status"], body["deferred_reason"]) == ("queued", None)
        wait_for_status(client, body["id"], "delivered", timeout=15)


def test_cancel_stops_a_scheduled_notification_and_a_second_cancel_is_a_conflict(
    client: httpx.Client,
) -> None:
    notification_id = client.post("/v1/notifications", json=_email(send_at="2030-01-01T00:00:00Z")).json()[
        "id"
    ]

    cancelled = client.post(f"/v1/notifications/{notification_id}/cancel")
    again = client.post(f"/v1/notifications/{notification_id}/cancel")

    assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert client.post(f"/v1/notifications/{uuid.uuid4()}/cancel").status_code == 404


def test_a_cancelled_queued_notification_is_dropped_by_the_worker(
    stack: Stack,
    client: httpx.Client,
    tenant: Tenant,
    session_factory: sessionmaker[Session],
    task_publisher: ConfirmedPublisher,
) -> None:
    """Cancelled while its message is still in RabbitMQ: the worker drops the message."""
    with transaction(session_factory) as session:
        accepted = accept_notification(
            session,
            tenant_id=tenant.id,
            request=NotificationRequest.model_validate(_email()),
            publish_grace=timedelta(hours=1),  # Queued; published below, after the cancel.
        )
    notification_id = accepted.notification.id
    assert client.post(f"/v1/notifications/{notification_id}/cancel").json()["status"] == "cancelled"
    skipped = 'pulse_deliveries_skipped_total{channel="email"}'
    skipped_before = metric_value(stack.metrics_url("email_worker"), skipped)

    task_publisher.publish([TaskMessage(notification_id, "email.normal")])

    wait_until(
        lambda: metric_value(stack.metrics_url("email_worker"), skipped) > skipped_before, what="the drop"
    )
    body = client.get(f"/v1/notifications/{notification_id}").json()
    assert (body["status"], body["attempt_count"]) == ("cancelled", 0)


def test_force_sends_a_scheduled_notification_now(client: httpx.Client) -> None:
    notification_id = client.post("/v1/notifications", json=_email(send_at="2030-01-01T00:00:00Z")).json()[
        "id"
    ]

    forced = client.post(f"/v1/notifications/{notification_id}/force")

    assert (forced.status_code, forced.json()["status"], forced.json()["scheduled_for"]) == (
        202,
        "queued",
        None,
    )
    wait_for_status(client, notification_id, "delivered", timeout=15)
    assert client.post(f"/v1/notifications/{notification_id}/force").status_code == 409


def test_a_read_only_key_cannot_cancel_or_force(stack: Stack, make_tenant: Callable[..., Tenant]) -> None:
    reader = make_tenant(scopes="read")
    with stack.client(reader.api_key) as client:
        assert client.post(f"/v1/notifications/{uuid.uuid4()}/cancel").status_code == 403
        assert client.post(f"/v1/notifications/{uuid.uuid4()}/force").status_code == 403


@pytest.fixture
def second_scheduler(stack: Stack) -> Iterator[str]:
    """Another scheduler process on the same database and broker; yields its metrics URL."""
    port = free_port()
    log = (stack.log_dir / "scheduler_2.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "services.scheduler"],
        cwd=REPO,
        env={**stack.env, "PULSE_SCHEDULER_METRICS_PORT": str(port)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_until(lambda: _answers(url), what="the second scheduler")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_two_schedulers_release_each_due_notification_exactly_once(
    stack: Stack, client: httpx.Client, second_scheduler: str
) -> None:
    schedulers = [stack.metrics_url("scheduler"), second_scheduler]
    released_before = sum(metric_value(url, RELEASED) for url in schedulers)
    send_at = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()

    ids = [client.post("/v1/notifications", json=_email(send_at=send_at)).json()["id"] for _ in range(30)]
    delivered = [wait_for_status(client, notification_id, "delivered", timeout=15) for notification_id in ids]

    assert all(body["attempt_count"] == 1 for body in delivered)
    released = [metric_value(url, RELEASED) for url in schedulers]
    assert sum(released) - released_before == 30
