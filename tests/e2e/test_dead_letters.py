"""End to end: failed notifications listed and replayed through /v1/dead-letters, and the broker's
dead-letter queue kept in step with PostgreSQL by the scheduler."""

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from devtools.stack import Stack
from tests.conftest import Tenant, wait_for_status, wait_until
from tests.e2e.test_email_delivery import _dead_lettered_ids, _email, _messages_to

PROBLEM_JSON = "application/problem+json"
DEAD_QUEUE = "pulse.email.dead"


@pytest.fixture
def sandbox(stack: Stack) -> Iterator[httpx.Client]:
    with stack.sandbox() as client:
        yield client
        client.delete("/api/faults")


def _recipient(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@example.com"


def _fail_next(sandbox: httpx.Client, count: int = 1) -> None:
    """The next `count` SMTP sends are refused for good (550)."""
    sandbox.post(
        "/api/faults", json={"endpoint": "smtp", "status": 550, "fail_next": count}
    ).raise_for_status()


def _send(client: httpx.Client, recipient: str, **fields: Any) -> str:
    response = client.post("/v1/notifications", json={**_email(recipient), **fields})
    assert response.status_code == 202, response.text
    notification_id: str = response.json()["id"]
    return notification_id


def _send_and_fail(stack: Stack, tenant: Tenant, sandbox: httpx.Client, prefix: str) -> str:
    _fail_next(sandbox)
    with stack.client(tenant.api_key) as client:
        notification_id = _send(client, _recipient(prefix))
        wait_for_status(client, notification_id, "failed")
    return notification_id


def _listed_ids(client: httpx.Client, **params: str) -> list[str]:
    response = client.get("/v1/dead-letters", params=params)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def _assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"]
    return body


def _copies_in_dead_queue(stack: Stack, notification_id: str) -> int:
    return _dead_lettered_ids(stack.infrastructure.broker_url, DEAD_QUEUE).count(notification_id)


def _copies_twice_in_a_row(stack: Stack, notification_id: str, copies: int) -> Callable[[], bool]:
    """The scheduler's reconciliation holds the queue's messages (unacknowledged) for a moment while
    it inspects them; a single peek in that moment would miss copies that are still there."""
    seen = 0

    def settled() -> bool:
        nonlocal seen
        seen = seen + 1 if _copies_in_dead_queue(stack, notification_id) == copies else 0
        return seen >= 2

    return settled


def test_a_failed_notification_is_listed_with_its_error_and_attempts_for_its_tenant_only(
    stack: Stack, make_tenant: Callable[..., Tenant], sandbox: httpx.Client
) -> None:
    tenant, other = make_tenant(), make_tenant()
    notification_id = _send_and_fail(stack, tenant, sandbox, "listed")

    with stack.client(tenant.api_key) as client:
        response = client.get("/v1/dead-letters")
        assert response.status_code == 200, response.text
        items = response.json()["items"]
        by_channel = _listed_ids(client, channel="email")
        other_channel = _listed_ids(client, channel="sms")
    with stack.client(other.api_key) as client:
        for_other = _listed_ids(client)

    [item] = [item for item in items if item["id"] == notification_id]
    assert item["status"] == "failed"
    assert item["failed_at"] is not None
    assert "550" in item["last_error"]
    assert item["attempt_count"] == 1
    [attempt] = item["attempts"]
    assert (attempt["number"], attempt["outcome"]) == (1, "failed")
    assert "550" in attempt["error"]
    assert notification_id in by_channel
    assert notification_id not in other_channel
    assert notification_id not in for_other


def test_a_replayed_notification_is_delivered_keeps_its_history_and_leaves_the_dead_letter_queue(
    stack: Stack, tenant: Tenant, sandbox: httpx.Client
) -> None:
    recipient = _recipient("replay")
    _fail_next(sandbox)
    with stack.client(tenant.api_key) as client:
        notification_id = _send(client, recipient)
        wait_for_status(client, notification_id, "failed")
        wait_until(
            lambda: _copies_in_dead_queue(stack, notification_id) == 1,
            timeout=10,
            what="the message in pulse.email.dead",
        )

        response = client.post(f"/v1/dead-letters/{notification_id}/replay")
        assert response.status_code == 202, response.text
        assert response.json()["id"] == notification_id
        assert response.json()["status"] == "queued"
        assert response.json()["failed_at"] is None

        delivered = wait_for_status(client, notification_id, "delivered")
        still_listed = _listed_ids(client)

    failed_attempt, delivered_attempt = delivered["attempts"]  # type: ignore[misc]
    assert (failed_attempt["number"], failed_attempt["outcome"]) == (1, "failed")
    assert "550" in failed_attempt["error"]
    assert (delivered_attempt["number"], delivered_attempt["outcome"]) == (2, "delivered")
    assert delivered["attempt_count"] == 2
    assert delivered["last_error"] is None
    assert delivered["failed_at"] is None
    assert notification_id not in still_listed
    assert len(_messages_to(sandbox, recipient)) == 1
    wait_until(
        _copies_twice_in_a_row(stack, notification_id, 0),
        timeout=10,
        what="the scheduler to prune the replayed notification's copy from pulse.email.dead",
    )


def test_a_replay_grants_a_fresh_attempt_budget(stack: Stack, tenant: Tenant, sandbox: httpx.Client) -> None:
    recipient = _recipient("budget")
    sandbox.post("/api/faults", json={"endpoint": "smtp", "status": 421, "rate": 1.0}).raise_for_status()
    with stack.client(tenant.api_key) as client:
        notification_id = _send(client, recipient, priority="low")  # 3 attempts
        first = wait_for_status(client, notification_id, "failed")

        assert client.post(f"/v1/dead-letters/{notification_id}/replay").status_code == 202
        second = wait_until(
            lambda: (
                body
                if (body := client.get(f"/v1/notifications/{notification_id}").json())["status"] == "failed"
                and body["attempt_count"] == 6
                else None
            ),
            timeout=30,
            what="the replayed notification to fail again after 3 more attempts",
        )
        # Both failures dead-lettered a copy; the reconciliation keeps one per failed notification.
        wait_until(
            _copies_twice_in_a_row(stack, notification_id, 1),
            timeout=10,
            what="exactly one copy in pulse.email.dead",
        )

        sandbox.delete("/api/faults").raise_for_status()
        assert client.post(f"/v1/dead-letters/{notification_id}/replay").status_code == 202
        delivered = wait_for_status(client, notification_id, "delivered")

    assert [attempt["outcome"] for attempt in first["attempts"]] == ["failed"] * 3  # type: ignore[union-attr]
    assert [attempt["outcome"] for attempt in second["attempts"]] == ["failed"] * 6
    assert [attempt["number"] for attempt in delivered["attempts"]] == list(range(1, 8))  # type: ignore[union-attr]
    assert [attempt["outcome"] for attempt in delivered["attempts"]] == ["failed"] * 6 + [  # type: ignore[union-attr]
        "delivered"
    ]
    assert delivered["attempt_count"] == 7
    assert len(_messages_to(sandbox, recipient)) == 1


def test_a_bulk_replay_requeues_only_this_tenant_s_failures_of_the_channel_since_the_given_time(
    stack: Stack, make_tenant: Callable[..., Tenant], sandbox: httpx.Client
) -> None:
    tenant, other = make_tenant(), make_tenant()
    before = _send_and_fail(stack, tenant, sandbox, "before")
    since = datetime.now(UTC)

    _fail_next(sandbox, 3)
    with stack.client(tenant.api_key) as client, stack.client(other.api_key) as other_client:
        in_range = [_send(client, _recipient("bulk")) for _ in range(2)]
        other_tenants = _send(other_client, _recipient("other"))
        for notification_id in in_range:
            wait_for_status(client, notification_id, "failed")
        wait_for_status(other_client, other_tenants, "failed")

        response = client.post(
            "/v1/dead-letters/replay", json={"channel": "email", "since": since.isoformat()}
        )
        assert response.status_code == 202, response.text
        result = response.json()

        delivered = [wait_for_status(client, notification_id, "delivered") for notification_id in in_range]
        before_status = client.get(f"/v1/notifications/{before}").json()["status"]
        other_status = other_client.get(f"/v1/notifications/{other_tenants}").json()["status"]
        still_listed = _listed_ids(client)

    assert result["replayed"] == 2
    assert sorted(result["ids"]) == sorted(in_range)
    assert [len(body["attempts"]) for body in delivered] == [2, 2]  # type: ignore[arg-type]
    assert before_status == "failed"
    assert other_status == "failed"
    assert before in still_listed
    assert not set(in_range) & set(still_listed)


def test_replay_errors(stack: Stack, make_tenant: Callable[..., Tenant], sandbox: httpx.Client) -> None:
    tenant, other = make_tenant(), make_tenant()
    reader = make_tenant(scopes="send,read")
    others_failure = _send_and_fail(stack, other, sandbox, "theirs")

    with stack.client(tenant.api_key) as client:
        delivered = _send(client, _recipient("fine"))
        wait_for_status(client, delivered, "delivered")

        conflict = _assert_problem(client.post(f"/v1/dead-letters/{delivered}/replay"), 409)
        assert "delivered" in conflict["detail"]
        _assert_problem(client.post(f"/v1/dead-letters/{uuid.uuid4()}/replay"), 404)
        _assert_problem(client.post(f"/v1/dead-letters/{others_failure}/replay"), 404)
        unknown_field = _assert_problem(
            client.post("/v1/dead-letters/replay", json={"channel": "email", "tenant": "everyone"}), 422
        )
        assert any("tenant" in error["loc"] for error in unknown_field["errors"])
        _assert_problem(client.post("/v1/dead-letters/replay", json={"channel": "pigeon"}), 422)
        _assert_problem(client.get("/v1/dead-letters", params={"limit": 0}), 422)
        _assert_problem(client.get("/v1/dead-letters", params={"limit": 201}), 422)

    with stack.client(reader.api_key) as client:
        assert client.get("/v1/dead-letters").status_code == 200  # Reading needs `read` only.
        _assert_problem(client.post(f"/v1/dead-letters/{uuid.uuid4()}/replay"), 403)
        _assert_problem(client.post("/v1/dead-letters/replay", json={"channel": "email"}), 403)

    with stack.client(other.api_key) as client:
        assert client.get(f"/v1/notifications/{others_failure}").json()["status"] == "failed"
