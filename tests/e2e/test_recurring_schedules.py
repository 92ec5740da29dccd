"""End to end: recurring schedules through /v1/schedules, run by the real scheduler, delivered by the
real email worker."""

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from devtools.stack import Stack
from tests.conftest import Tenant, wait_for_status, wait_until
from tests.e2e.test_email_delivery import _email, _messages_to

PROBLEM_JSON = "application/problem+json"
EVERY_SECOND = "* * * * * *"
UNFINISHED = ("scheduled", "queued", "sending", "retrying")


@pytest.fixture
def client(stack: Stack, tenant: Tenant) -> Iterator[httpx.Client]:
    """The tenant's client. Afterwards, every schedule it left is deleted and every notification its
    schedules sent is finished, so that none reaches SMTP during a later test (and its faults)."""
    with stack.client(tenant.api_key) as client:
        yield client
        for schedule in client.get("/v1/schedules", params={"limit": 200}).json()["items"]:
            client.delete(f"/v1/schedules/{schedule['id']}")
        wait_until(lambda: not _unfinished(client), timeout=30, what="the schedules' notifications to finish")


def _unfinished(client: httpx.Client) -> list[str]:
    return [
        item["id"]
        for status in UNFINISHED
        for item in client.get("/v1/notifications", params={"status": status, "limit": 200}).json()["items"]
    ]


def _recipient(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@example.com"


def _create(client: httpx.Client, cron: str = EVERY_SECOND, **fields: Any) -> dict[str, Any]:
    body = {"cron": cron, "notification": _email(_recipient("schedule")), **fields}
    response = client.post("/v1/schedules", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _read(client: httpx.Client, schedule_id: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"/v1/schedules/{schedule_id}", params=params)
    assert response.status_code == 200, response.text
    schedule: dict[str, Any] = response.json()
    return schedule


def _action(client: httpx.Client, schedule_id: str, action: str) -> dict[str, Any]:
    response = client.post(f"/v1/schedules/{schedule_id}/{action}")
    assert response.status_code == 200, response.text
    schedule: dict[str, Any] = response.json()
    return schedule


def _assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["detail"]
    return body


def _error_locations(response: httpx.Response) -> list[list[str | int]]:
    return [error["loc"] for error in _assert_problem(response, 422)["errors"]]


def _wait_for_scheduler_ticks(client: httpx.Client) -> None:
    """Wait until a notification held for 2 s is released by the scheduler and delivered: proof that
    the scheduler ran its jobs (the schedules' one among them) for at least 2 s since now."""
    send_at = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    response = client.post("/v1/notifications", json={**_email(_recipient("marker")), "send_at": send_at})
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "scheduled"
    wait_for_status(client, response.json()["id"], "delivered")


def test_an_every_second_schedule_sends_pauses_resumes_and_is_deleted(
    stack: Stack, client: httpx.Client
) -> None:
    recipient = _recipient("every-second")
    created = _create(client, notification=_email(recipient), timezone="Europe/Paris")
    schedule_id = created["id"]
    assert created["cron"] == EVERY_SECOND and created["timezone"] == "Europe/Paris"
    assert created["notification"]["recipient"] == recipient
    assert (created["paused"], created["run_count"], created["last_run_at"]) == (False, 0, None)
    assert datetime.fromisoformat(created["next_run_at"]) > datetime.fromisoformat(created["created_at"])
    assert schedule_id in [item["id"] for item in client.get("/v1/schedules").json()["items"]]

    def three_delivered() -> list[dict[str, Any]] | None:
        history = _read(client, schedule_id)["history"]
        delivered = [run for run in history if run["status"] == "delivered"]
        return delivered if len(delivered) >= 3 else None

    delivered = wait_until(three_delivered, timeout=20, what="three deliveries of the schedule")
    for run in delivered:
        notification = client.get(f"/v1/notifications/{run['id']}").json()
        assert notification["schedule_id"] == schedule_id
        assert notification["status"] == "delivered"
    with stack.sandbox() as sandbox:
        assert len(_messages_to(sandbox, recipient)) >= 3

    # Pausing waits for a run in progress, so the count it returns is final.
    paused = _action(client, schedule_id, "pause")
    assert paused["paused"] is True
    _wait_for_scheduler_ticks(client)
    after_pause = _read(client, schedule_id, history=200)
    assert after_pause["run_count"] == paused["run_count"]
    assert len(after_pause["history"]) == paused["run_count"]

    resumed = _action(client, schedule_id, "resume")
    assert resumed["paused"] is False
    assert datetime.fromisoformat(resumed["next_run_at"]) > datetime.now(UTC) - timedelta(seconds=1)
    wait_until(
        lambda: _read(client, schedule_id)["run_count"] > paused["run_count"],
        timeout=15,
        what="a run after resuming",
    )

    assert client.delete(f"/v1/schedules/{schedule_id}").status_code == 204
    _assert_problem(client.get(f"/v1/schedules/{schedule_id}"), 404)
    _assert_problem(client.delete(f"/v1/schedules/{schedule_id}"), 404)
    # Its notifications stay, unlinked.
    kept = client.get(f"/v1/notifications/{delivered[0]['id']}").json()
    assert (kept["status"], kept["schedule_id"]) == ("delivered", None)


@pytest.mark.parametrize(
    ("change", "location"),
    [
        ({"cron": "every day at nine"}, ["body", "cron"]),
        ({"cron": "* * * *"}, ["body", "cron"]),
        ({"cron": "0 0 30 2 *"}, ["body", "cron"]),  # Never fires.
        ({"timezone": "Mars/Olympus"}, ["body", "timezone"]),
        (
            {"notification": {**_email("ada@example.com"), "content": {"body": "no subject"}}},
            ["body", "notification", "content"],
        ),
        ({"notification": _email("not-an-address")}, ["body", "notification", "recipient"]),
        (
            {
                "notification": {
                    **_email("ada@example.com"),
                    "escalate": {"after_seconds": 60, "channels": ["sms"]},
                }
            },
            ["body", "notification", "escalate"],
        ),
        (
            {"notification": {**_email("ada@example.com"), "send_at": "2030-01-01T09:00:00Z"}},
            ["body", "notification", "send_at"],
        ),
        (
            {"notification": {**_email("ada@example.com"), "colour": "red"}},
            ["body", "notification", "colour"],
        ),
        ({"every": "day"}, ["body", "every"]),
    ],
)
def test_invalid_schedules_are_refused_with_422_naming_the_field(
    client: httpx.Client, change: dict[str, Any], location: list[str]
) -> None:
    body = {"cron": "0 9 * * *", "timezone": "UTC", "notification": _email("ada@example.com"), **change}
    assert location in _error_locations(client.post("/v1/schedules", json=body))
    assert client.get("/v1/schedules").json()["items"] == []


def test_schedules_need_a_key_with_the_right_scope_and_belong_to_their_tenant(
    stack: Stack, client: httpx.Client, make_tenant: Callable[..., Tenant]
) -> None:
    schedule_id = _create(client, cron="0 9 * * *")["id"]
    body = {"cron": "0 9 * * *", "notification": _email("ada@example.com")}

    anonymous = httpx.post(f"{stack.api_url}/v1/schedules", json=body)
    _assert_problem(anonymous, 401)
    with stack.client(make_tenant("read").api_key) as reader:
        _assert_problem(reader.post("/v1/schedules", json=body), 403)
        _assert_problem(reader.post(f"/v1/schedules/{schedule_id}/pause"), 403)
        _assert_problem(reader.delete(f"/v1/schedules/{schedule_id}"), 403)
    with stack.client(make_tenant().api_key) as other:
        _assert_problem(other.get(f"/v1/schedules/{schedule_id}"), 404)
        for action in ("pause", "resume"):
            _assert_problem(other.post(f"/v1/schedules/{schedule_id}/{action}"), 404)
        _assert_problem(other.delete(f"/v1/schedules/{schedule_id}"), 404)
        assert other.get("/v1/schedules").json()["items"] == []
    assert _read(client, schedule_id)["paused"] is False
    assert _error_locations(client.get("/v1/schedules/not-a-uuid")) == [["path", "schedule_id"]]
