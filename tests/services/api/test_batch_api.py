"""POST /v1/notifications/batch through the gateway: per-item results, both modes, limits."""

import uuid
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from pulse.db import transaction
from pulse.db.models import Notification, OutboxMessage
from pulse.tenants.service import configure_tenant
from tests.conftest import Tenant, wait_until
from tests.services.api.conftest import auth


def _email(index: int, **fields: Any) -> dict[str, Any]:
    return {
        "channel": "email",
        "recipient": f"user-{index}@example.com",
        "content": {"subject": "Hello", "body": f"Message {index}"},
        **fields,
    }


def _stored(session_factory: sessionmaker[Session], tenant: Tenant) -> list[Notification]:
    with session_factory() as session:
        return list(session.scalars(select(Notification).where(Notification.tenant_id == tenant.id)))


def test_best_effort_accepts_the_valid_items_and_reports_the_others_in_order(
    gateway: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    items = [
        _email(0),
        {"channel": "email", "recipient": "not an address", "content": {"subject": "s", "body": "b"}},
        _email(2, priority="high"),
        {"channel": "pigeon", "recipient": "x", "content": {"body": "b"}},
        {"channel": "email", "recipient": "a@example.com", "template": "missing"},
        _email(5),
    ]
    response = gateway.post(
        "/v1/notifications/batch", json={"mode": "best_effort", "notifications": items}, headers=auth(tenant)
    )

    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["refused"]) == (3, 3)
    results = body["results"]
    assert [result["index"] for result in results] == list(range(6))
    assert [result["status"] for result in results] == ["queued", None, "queued", None, None, "queued"]
    assert results[1]["error"]["status"] == 422
    assert results[1]["error"]["errors"][0]["loc"] == ["body", "notifications", 1, "recipient"]
    assert results[3]["error"]["errors"][0]["loc"][:4] == ["body", "notifications", 3, "channel"]
    assert "no template named 'missing'" in results[4]["error"]["detail"]
    assert results[4]["error"]["errors"][0]["loc"] == ["body", "notifications", 4, "template"]
    stored = {notification.id: notification for notification in _stored(session_factory, tenant)}
    accepted = [results[i]["id"] for i in (0, 2, 5)]
    assert sorted(map(str, stored)) == sorted(accepted)
    assert stored[next(id for id in stored if str(id) == accepted[1])].priority == "high"


def test_all_or_nothing_refuses_the_whole_batch_when_one_item_is_invalid(
    gateway: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    items = [_email(0), _email(1, timezone="Mars/Olympus"), _email(2)]
    response = gateway.post(
        "/v1/notifications/batch",
        json={"mode": "all_or_nothing", "notifications": items},
        headers=auth(tenant),
    )

    assert response.status_code == 422, response.text
    problem = response.json()
    assert "1 of 3" in problem["detail"]
    assert [error["loc"] for error in problem["errors"]] == [["body", "notifications", 1, "timezone"]]
    assert _stored(session_factory, tenant) == []


def test_all_or_nothing_refuses_the_batch_for_an_item_refused_by_the_database_checks(
    gateway: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    # Valid in itself; refused once its template is looked up.
    items = [_email(0), {"channel": "email", "recipient": "a@example.com", "template": "nope"}]
    response = gateway.post(
        "/v1/notifications/batch",
        json={"mode": "all_or_nothing", "notifications": items},
        headers=auth(tenant),
    )

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", "notifications", 1, "template"]
    assert _stored(session_factory, tenant) == []


def test_a_batch_holds_one_to_a_thousand_items(gateway: TestClient, tenant: Tenant) -> None:
    for size in (0, 1001):
        response = gateway.post(
            "/v1/notifications/batch",
            json={"notifications": [_email(i) for i in range(size)]},
            headers=auth(tenant),
        )
        assert response.status_code == 422, size
        assert response.json()["errors"][0]["loc"] == ["body", "notifications"]
    unknown_mode = gateway.post(
        "/v1/notifications/batch", json={"mode": "some", "notifications": [_email(0)]}, headers=auth(tenant)
    )
    assert unknown_mode.status_code == 422


def test_a_thousand_notifications_are_stored_and_owed_to_the_broker_in_one_call(
    gateway: TestClient, make_tenant: Callable[..., Tenant], session_factory: sessionmaker[Session]
) -> None:
    tenant = make_tenant()
    items = [_email(i, send_at="2099-01-01T00:00:00Z") if i % 10 == 0 else _email(i) for i in range(1000)]
    response = gateway.post("/v1/notifications/batch", json={"notifications": items}, headers=auth(tenant))

    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 1000
    stored = _stored(session_factory, tenant)
    assert len(stored) == 1000
    assert sum(notification.status == "scheduled" for notification in stored) == 100
    ids = [notification.id for notification in stored]

    def owed() -> int:
        with session_factory() as session:
            query = (
                select(func.count()).select_from(OutboxMessage).where(OutboxMessage.notification_id.in_(ids))
            )
            return session.scalar(query) or 0

    # Published right after commit, confirmed as one lot, then their outbox rows deleted: well
    # before the outbox sweep would take them (PULSE_PUBLISH_GRACE_SECONDS, 5 s).
    wait_until(lambda: owed() == 0, timeout=4, what="the batch's outbox rows to be published")


def test_the_tenant_default_priority_applies_to_items_without_one(
    gateway: TestClient, make_tenant: Callable[..., Tenant], session_factory: sessionmaker[Session]
) -> None:
    tenant = make_tenant()
    with transaction(session_factory) as session:
        configure_tenant(session, name=tenant.name, default_priority="low")
    response = gateway.post(
        "/v1/notifications/batch",
        json={"notifications": [_email(0), _email(1, priority="critical")]},
        headers=auth(tenant),
    )

    assert response.status_code == 202, response.text
    priorities = {n.recipient: n.priority for n in _stored(session_factory, tenant)}
    assert priorities == {"user-0@example.com": "low", "user-1@example.com": "critical"}


def test_inapp_items_escalate_as_single_sends_do_and_other_channels_cannot(
    gateway: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    escalate = {"after_seconds": 600, "channels": ["email"]}
    items = [
        {"channel": "inapp", "recipient": "ada", "content": {"body": "Approve"}, "escalate": escalate},
        {"channel": "inapp", "user_id": "bob", "content": {"body": "Approve"}},
        _email(2, escalate=escalate),
    ]

    response = gateway.post("/v1/notifications/batch", json={"notifications": items}, headers=auth(tenant))

    assert response.status_code == 202, response.text
    results = response.json()["results"]
    assert [result["status"] for result in results] == ["queued", "queued", None]
    assert results[2]["error"]["errors"][0]["loc"] == ["body", "notifications", 2, "escalate"]
    stored = {row.id: row for row in _stored(session_factory, tenant)}
    ada, bob = (stored[uuid.UUID(results[index]["id"])] for index in (0, 1))
    assert (ada.recipient, ada.user_id, bob.recipient, bob.user_id) == ("ada", "ada", "bob", "bob")
    assert ada.escalation is not None and ada.escalation["status"] == "pending"
    assert ada.escalate_at is not None and bob.escalation is None
