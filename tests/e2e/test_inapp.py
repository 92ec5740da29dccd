"""End to end, through the real services: an inapp send is stored in its user's inbox by the inapp
worker (`delivered`) and pushed to the realtime exchange; the user reads it with an end-user token
(`read`, with its signed callback); one left unread escalates to email, delivered by the email worker
to the sandbox."""

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devtools.stack import Stack
from pulse.inapp.tokens import EndUser
from tests.conftest import Tenant, wait_for_status, wait_until
from tests.inapp.conftest import realtime_events


@pytest.fixture
def client(stack: Stack, tenant: Tenant) -> Iterator[httpx.Client]:
    with stack.client(tenant.api_key) as client:
        yield client


@pytest.fixture
def sandbox(stack: Stack) -> Iterator[httpx.Client]:
    with stack.sandbox() as client:
        yield client


def _user_client(stack: Stack, client: httpx.Client, user_id: str) -> httpx.Client:
    token = client.post("/v1/auth/token", json={"user_id": user_id}).json()["token"]
    return httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def _events_at(sandbox: httpx.Client, path: str, count: int) -> list[dict[str, Any]]:
    """The status events the sandbox received at `path`, oldest first, once there are `count`."""

    def arrived() -> list[dict[str, Any]] | None:
        items = sandbox.get("/api/messages", params={"channel": "webhook", "recipient": path}).json()["items"]
        return items if len(items) >= count else None

    messages = wait_until(arrived, what=f"{count} status events at {path}")
    return sorted((json.loads(message["body"]) for message in messages), key=lambda event: event["timestamp"])


def test_an_inapp_send_is_delivered_to_the_inbox_pushed_and_read_with_its_callbacks(
    stack: Stack, client: httpx.Client, sandbox: httpx.Client, tenant: Tenant
) -> None:
    user_id = f"ada-{uuid.uuid4().hex[:8]}"
    callback_path = f"/webhooks/status/{uuid.uuid4().hex[:8]}"
    with realtime_events(stack.infrastructure.broker_url, EndUser(tenant.id, user_id)) as received:
        response = client.post(
            "/v1/notifications",
            json={
                "channel": "inapp",
                "recipient": user_id,
                "content": {"subject": "Export ready", "body": "Your export is ready", "data": {"id": 7}},
                "callback_url": stack.sandbox_url + callback_path,
            },
        )
        assert response.status_code == 202, response.text
        notification_id = response.json()["id"]
        delivered = wait_for_status(client, notification_id, "delivered")
        [pushed] = wait_until(received, what="the realtime notification event")

    assert delivered["user_id"] == user_id
    assert [(a["provider"], a["outcome"]) for a in delivered["attempts"]] == [("inbox", "delivered")]
    item = pushed["notification"]
    assert (pushed["type"], pushed["tenant_id"], pushed["user_id"]) == (
        "notification",
        str(tenant.id),
        user_id,
    )
    assert (item["id"], item["subject"], item["body"], item["data"], item["status"], item["read_at"]) == (
        notification_id,
        "Export ready",
        "Your export is ready",
        {"id": 7},
        "delivered",
        None,
    )

    with _user_client(stack, client, user_id) as user:
        inbox = user.get("/v1/inbox").json()
        assert [listed["id"] for listed in inbox["items"]] == [notification_id]
        assert inbox["unread_count"] == 1
        read = user.patch(f"/v1/inbox/{notification_id}/read")
        assert read.status_code == 200, read.text
        assert user.get("/v1/inbox/unread-count").json() == {"unread_count": 0}

    stored = client.get(f"/v1/notifications/{notification_id}").json()
    assert (stored["status"], stored["read_at"]) == ("read", read.json()["read_at"])
    delivered_event, read_event = _events_at(sandbox, callback_path, 2)
    assert (delivered_event["type"], read_event["type"]) == ("notification.delivered", "notification.read")
    assert read_event["data"]["read_at"] == stored["read_at"].replace("Z", "+00:00")

    summary = client.get("/v1/analytics/summary").json()["channels"]["inapp"]
    assert (summary["read"], summary["read_rate"]) == (1, 1.0)


def test_an_unread_inapp_notification_escalates_to_an_email_delivered_in_the_sandbox(
    client: httpx.Client, sandbox: httpx.Client
) -> None:
    user_id = f"ada-{uuid.uuid4().hex[:8]}"
    address = f"{user_id}@example.com"
    assert client.put(f"/v1/recipients/{user_id}", json={"email": address}).status_code in (200, 201)
    response = client.post(
        "/v1/notifications",
        json={
            "channel": "inapp",
            "user_id": user_id,
            "content": {"subject": "Approve the invoice", "body": "Invoice 42 waits for you"},
            "escalate": {"after_seconds": 10, "channels": ["push", "email"]},
        },
    )
    assert response.status_code == 202, response.text
    inapp_id = response.json()["id"]
    wait_for_status(client, inapp_id, "delivered")

    def emailed() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = sandbox.get(
            "/api/messages", params={"channel": "email", "recipient": address}
        ).json()["items"]
        return items

    [email] = wait_until(emailed, timeout=60, what=f"the escalation email to {address}")
    assert (email["subject"], email["body"].strip()) == ("Approve the invoice", "Invoice 42 waits for you")

    escalation = client.get(f"/v1/notifications/{inapp_id}").json()["escalation"]
    assert (escalation["status"], escalation["channel"]) == ("escalated", "email")
    escalated = wait_for_status(client, escalation["notification_id"], "delivered")
    assert (escalated["channel"], escalated["escalated_from"], escalated["recipient"]) == (
        "email",
        inapp_id,
        address,
    )


def test_an_inapp_topic_send_lands_in_each_subscribers_own_inbox(
    stack: Stack, client: httpx.Client, tenant: Tenant
) -> None:
    run = uuid.uuid4().hex[:8]
    users = [f"{run}-{index}" for index in range(3)]
    assert client.put(f"/v1/topics/inbox-{run}/subscribers", json={"user_ids": users}).status_code == 200
    sent = client.post(
        "/v1/notifications",
        json={"channel": "inapp", "topic": f"inbox-{run}", "content": {"body": "Maintenance tonight"}},
    )
    assert sent.status_code == 202, sent.text
    fanout_id = sent.json()["fanout_id"]

    def created() -> bool:
        return bool(client.get(f"/v1/fanouts/{fanout_id}").json()["created"] == len(users))

    wait_until(created, timeout=60, what="the fan-out to create every subscriber's notification")
    for user_id in users:
        with _user_client(stack, client, user_id) as user:

            def unread(user: httpx.Client = user) -> list[dict[str, Any]] | None:
                items: list[dict[str, Any]] = user.get("/v1/inbox").json()["items"]
                return items or None

            [item] = wait_until(unread, what=f"{user_id}'s inbox item")
        assert item["body"] == "Maintenance tonight"
