"""/v1/schedules through the gateway in-process: the same screening as a direct send, and failed runs
visible to the tenant. On a private database, so that no scheduler of the session's stack runs them."""

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from devtools.stack import Infrastructure
from pulse.db import transaction
from pulse.db.models import Schedule
from pulse.notifications.acceptance import AcceptanceSettings
from pulse.schedules.runs import run_due_schedules
from tests.conftest import Tenant, new_tenant
from tests.services.api.conftest import auth, in_process_gateway

EMAIL = {"channel": "email", "recipient": "ada@example.com", "content": {"subject": "Hi", "body": "Hello"}}
WEBHOOK = {"channel": "webhook", "content": {"body": "ping"}}


@pytest.fixture(scope="module")
def client(private: Infrastructure) -> Iterator[TestClient]:
    with in_process_gateway(private) as client:
        yield client


@pytest.fixture
def tenant(factory: sessionmaker[Session]) -> Tenant:
    return new_tenant(factory)


def _schedule(notification: dict[str, Any]) -> dict[str, Any]:
    return {"cron": "0 9 * * *", "timezone": "UTC", "notification": notification}


@pytest.mark.parametrize(
    ("notification", "field", "reason"),
    [
        ({**WEBHOOK, "recipient": "http://169.254.169.254/latest/meta-data/"}, "recipient", "cloud metadata"),
        ({**WEBHOOK, "recipient": "https://[fd00:ec2::254]/"}, "recipient", "cloud metadata"),
        ({**WEBHOOK, "recipient": "http://10.1.2.3:8080/hook"}, "recipient", "private address"),
        ({**WEBHOOK, "recipient": "http://192.168.0.10/hook"}, "recipient", "private address"),
        ({**EMAIL, "callback_url": "http://169.254.169.254/status"}, "callback_url", "cloud metadata"),
        ({**EMAIL, "callback_url": "http://172.16.0.1/status"}, "callback_url", "private address"),
    ],
)
def test_a_schedule_to_a_metadata_or_private_address_is_refused_with_422_naming_the_field(
    client: TestClient, tenant: Tenant, notification: dict[str, Any], field: str, reason: str
) -> None:
    response = client.post("/v1/schedules", json=_schedule(notification), headers=auth(tenant))

    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    [error] = response.json()["errors"]
    assert error["loc"] == ["body", "notification", field]
    assert reason in error["msg"]
    assert client.get("/v1/schedules", headers=auth(tenant)).json()["items"] == []
    # The very same notification is refused the same way as a direct send.
    direct = client.post("/v1/notifications", json=notification, headers=auth(tenant))
    assert direct.status_code == 422
    assert [e["loc"] for e in direct.json()["errors"]] == [["body", field]]


def test_a_schedule_to_a_public_webhook_is_accepted(client: TestClient, tenant: Tenant) -> None:
    notification = {**WEBHOOK, "recipient": "https://hooks.example.com/pulse"}
    response = client.post("/v1/schedules", json=_schedule(notification), headers=auth(tenant))
    assert response.status_code == 201, response.text


def test_failed_runs_and_why_a_schedule_is_paused_show_in_get_and_in_the_list(
    client: TestClient, tenant: Tenant, factory: sessionmaker[Session]
) -> None:
    notification = {**EMAIL, "content": None, "template": "gone"}  # There is no such template.
    created = client.post("/v1/schedules", json=_schedule(notification), headers=auth(tenant)).json()
    assert (created["paused_reason"], created["consecutive_failures"], created["last_error"]) == (
        None,
        0,
        None,
    )
    with transaction(factory) as session:
        session.execute(
            update(Schedule)
            .where(Schedule.id == uuid.UUID(created["id"]))
            .values(next_run_at=datetime.now(UTC))
        )
        run_due_schedules(session, rules=AcceptanceSettings(), pause_after_failures=1, batch_size=10)

    found = client.get(f"/v1/schedules/{created['id']}", headers=auth(tenant)).json()
    [listed] = client.get("/v1/schedules", headers=auth(tenant)).json()["items"]
    for schedule in (found, listed):
        assert (schedule["paused"], schedule["paused_reason"]) == (True, "failures")
        assert schedule["consecutive_failures"] == 1
        assert schedule["last_error"] == "template: there is no template named 'gone'"
        assert schedule["last_error_at"] is not None

    resumed = client.post(f"/v1/schedules/{created['id']}/resume", headers=auth(tenant)).json()
    assert (resumed["paused"], resumed["paused_reason"], resumed["consecutive_failures"]) == (False, None, 0)
    assert resumed["last_error"] == found["last_error"]
    paused = client.post(f"/v1/schedules/{created['id']}/pause", headers=auth(tenant)).json()
    assert (paused["paused"], paused["paused_reason"]) == (True, "requested")
