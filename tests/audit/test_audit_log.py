"""The audit log through the gateway in-process, on a private database: one entry for each kind of
change, in the change's transaction, without secrets; GET /v1/audit-log pages and filters."""

import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from devtools.stack import Infrastructure
from pulse.audit.service import Operator, record_change
from pulse.db import transaction
from pulse.db.models import AuditEntry, Notification
from pulse.errors import Conflict
from pulse.templates.schemas import TemplateIn
from pulse.templates.service import create_template
from tests.conftest import Tenant, new_tenant
from tests.services.api.conftest import auth, in_process_gateway

EMAIL = {"channel": "email", "recipient": "ada@example.com", "content": {"subject": "Hi", "body": "Hello"}}
TEMPLATE = {
    "name": "welcome",
    "channel": "email",
    "subject": "Hi {{ name }}",
    "body": "Hello",
    "variables": [],
}
# A webhook URL and a device token: neither may appear in the log.
HOOK_SECRET = "hook-password"
HOOKED = {
    "channel": "webhook",
    "recipient": f"https://user:{HOOK_SECRET}@hooks.example.com/in?token={HOOK_SECRET}",
    "content": {"body": "ping"},
}
DEVICE_TOKEN = "fcm-device-token-" + "x" * 40
PROFILE = {"email": "ada@example.com", "push_tokens": [DEVICE_TOKEN], "timezone": "Europe/Paris"}


@pytest.fixture(scope="module")
def client(private: Infrastructure) -> Iterator[TestClient]:
    with in_process_gateway(private) as client:
        yield client


@pytest.fixture
def tenant(factory: sessionmaker[Session]) -> Tenant:
    return new_tenant(factory)


def _ok(response: Any, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return response.json() if response.content else {}


def _scheduled(client: TestClient, tenant: Tenant) -> str:
    send_at = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    return str(
        _ok(client.post("/v1/notifications", json={**EMAIL, "send_at": send_at}, headers=auth(tenant)), 202)[
            "id"
        ]
    )


def _failed(client: TestClient, tenant: Tenant, factory: sessionmaker[Session]) -> str:
    notification_id = _scheduled(client, tenant)
    with transaction(factory) as session:
        session.execute(
            update(Notification)
            .where(Notification.id == uuid.UUID(notification_id))
            .values(status="failed", failed_at=func.now())
        )
    return notification_id


def _template(client: TestClient, tenant: Tenant, _: sessionmaker[Session]) -> str:
    return str(_ok(client.post("/v1/templates", json=TEMPLATE, headers=auth(tenant)), 201)["name"])


def _schedule(client: TestClient, tenant: Tenant, _: sessionmaker[Session]) -> str:
    body = {"cron": "0 9 * * *", "timezone": "UTC", "notification": HOOKED}
    return str(_ok(client.post("/v1/schedules", json=body, headers=auth(tenant)), 201)["id"])


def _profile(client: TestClient, tenant: Tenant, _: sessionmaker[Session]) -> str:
    return str(_ok(client.put("/v1/recipients/ada", json=PROFILE, headers=auth(tenant)), 201)["user_id"])


def _key(client: TestClient, tenant: Tenant, _: sessionmaker[Session]) -> str:
    return str(_ok(client.post("/v1/api-keys", json={"scopes": ["read"]}, headers=auth(tenant)), 201)["id"])


def _waiting(client: TestClient, tenant: Tenant, _: sessionmaker[Session]) -> str:
    return _scheduled(client, tenant)


def _topic(client: TestClient, tenant: Tenant, _: sessionmaker[Session]) -> str:
    _ok(client.put("/v1/topics/news/subscribers", json={"user_ids": ["ada", "bob"]}, headers=auth(tenant)))
    return "news"


def _fanout(client: TestClient, tenant: Tenant, factory: sessionmaker[Session]) -> str:
    body = {"channel": "email", "topic": _topic(client, tenant, factory), "content": EMAIL["content"]}
    return str(_ok(client.post("/v1/notifications", json=body, headers=auth(tenant)), 202)["fanout_id"])


def _two_failed(client: TestClient, tenant: Tenant, factory: sessionmaker[Session]) -> str:
    return _failed(client, tenant, factory) and _failed(client, tenant, factory)


@dataclass(frozen=True)
class Change:
    """A request that changes something. In `path` and `object_id`, `{id}` is what `prepare` made,
    `{created}` the id in the response, `{tenant}` the tenant's id."""

    method: str
    path: str
    object_type: str
    object_id: str
    status: int = 200
    body: dict[str, Any] | None = None
    prepare: Callable[[TestClient, Tenant, sessionmaker[Session]], str] | None = None


SCHEDULE = {"cron": "0 9 * * *", "notification": HOOKED}
CHANGES = {
    "template.create": Change("POST", "/v1/templates", "template", "welcome", 201, TEMPLATE),
    "template.update": Change(
        "PUT", "/v1/templates/{id}", "template", "{id}", 200, {**TEMPLATE, "body": "Hi"}, _template
    ),
    "template.delete": Change("DELETE", "/v1/templates/{id}", "template", "{id}", 204, prepare=_template),
    "schedule.create": Change("POST", "/v1/schedules", "schedule", "{created}", 201, SCHEDULE),
    "schedule.delete": Change("DELETE", "/v1/schedules/{id}", "schedule", "{id}", 204, prepare=_schedule),
    "schedule.pause": Change("POST", "/v1/schedules/{id}/pause", "schedule", "{id}", prepare=_schedule),
    "schedule.resume": Change("POST", "/v1/schedules/{id}/resume", "schedule", "{id}", prepare=_schedule),
    "recipient.create": Change("PUT", "/v1/recipients/ada", "recipient", "ada", 201, PROFILE),
    "recipient.update": Change(
        "PUT", "/v1/recipients/{id}", "recipient", "{id}", 200, {**PROFILE, "timezone": "UTC"}, _profile
    ),
    "recipient.delete": Change("DELETE", "/v1/recipients/{id}", "recipient", "{id}", 204, prepare=_profile),
    "api_key.create": Change("POST", "/v1/api-keys", "api_key", "{created}", 201, {"scopes": ["send"]}),
    "api_key.revoke": Change("DELETE", "/v1/api-keys/{id}", "api_key", "{id}", 204, prepare=_key),
    "webhook_secret.rotate": Change("POST", "/v1/webhook-secret/rotate", "webhook_secret", "{tenant}"),
    "dead_letter.replay": Change(
        "POST", "/v1/dead-letters/{id}/replay", "notification", "{id}", 202, prepare=_failed
    ),
    "dead_letter.replay_bulk": Change(
        "POST", "/v1/dead-letters/replay", "dead_letters", "email", 202, {"channel": "email"}, _two_failed
    ),
    "notification.cancel": Change(
        "POST", "/v1/notifications/{id}/cancel", "notification", "{id}", prepare=_waiting
    ),
    "notification.force": Change(
        "POST", "/v1/notifications/{id}/force", "notification", "{id}", 202, prepare=_waiting
    ),
    "topic.subscribe": Change(
        "PUT", "/v1/topics/news/subscribers", "topic", "news", body={"user_ids": ["ada"]}
    ),
    "topic.unsubscribe": Change(
        "DELETE", "/v1/topics/{id}/subscribers", "topic", "{id}", body={"user_ids": ["ada"]}, prepare=_topic
    ),
    "fanout.cancel": Change("POST", "/v1/fanouts/{id}/cancel", "fanout", "{id}", prepare=_fanout),
}


def _make(
    change: Change,
    client: TestClient,
    tenant: Tenant,
    factory: sessionmaker[Session],
    headers: dict[str, str],
) -> tuple[str, str]:
    """Make the change (after preparing it); the type and id of the object it changed."""
    prepared = change.prepare(client, tenant, factory) if change.prepare else ""
    response = client.request(
        change.method, change.path.format(id=prepared), json=change.body, headers={**auth(tenant), **headers}
    )
    created = _ok(response, change.status).get("id", "")
    return change.object_type, change.object_id.format(id=prepared, created=created, tenant=tenant.id)


def _key_id(client: TestClient, tenant: Tenant) -> str:
    items = client.get("/v1/api-keys", headers=auth(tenant)).json()["items"]
    return str(next(item["id"] for item in items if item["prefix"] == tenant.api_key[:10]))


def _entries(client: TestClient, tenant: Tenant, **filters: str) -> list[dict[str, Any]]:
    page = _ok(client.get("/v1/audit-log", params={"limit": 200, **filters}, headers=auth(tenant)))
    items: list[dict[str, Any]] = page["items"]
    return items


@pytest.mark.parametrize("action", list(CHANGES))
def test_each_change_leaves_one_entry_naming_the_key_the_object_and_the_request(
    client: TestClient, tenant: Tenant, factory: sessionmaker[Session], action: str
) -> None:
    request_id = f"audit-{secrets.token_hex(4)}"
    object_type, object_id = _make(CHANGES[action], client, tenant, factory, {"X-Request-ID": request_id})

    logged = [entry for entry in _entries(client, tenant) if entry["request_id"] == request_id]

    assert len(logged) == 1, logged
    entry = logged[0]
    assert (entry["action"], entry["object_type"], entry["object_id"]) == (action, object_type, object_id)
    assert entry["actor"] == _key_id(client, tenant)
    assert abs(datetime.fromisoformat(entry["created_at"]) - datetime.now(UTC)) < timedelta(minutes=1)


def test_diffs_show_what_changed_and_never_a_secret(
    client: TestClient, factory: sessionmaker[Session]
) -> None:
    secrets_shown: list[str] = []
    logs: list[str] = []
    by_action: dict[str, Any] = {}
    for change in CHANGES.values():
        tenant = new_tenant(factory)  # Each change its own, so that they do not collide.
        _make(change, client, tenant, factory, {})
        issued = _ok(client.post("/v1/api-keys", json={"scopes": ["send"]}, headers=auth(tenant)), 201)
        secrets_shown += [tenant.api_key, issued["key"], issued["key"][10:]]
        secrets_shown.append(_ok(client.get("/v1/webhook-secret", headers=auth(tenant)))["secret"])
        logs.append(client.get("/v1/audit-log", headers=auth(tenant)).text)
        by_action.update((entry["action"], entry["changes"]) for entry in _entries(client, tenant))

    for secret in [*secrets_shown, HOOK_SECRET, DEVICE_TOKEN]:
        assert not any(secret in log for log in logs), secret
    assert by_action["template.update"] == {
        "before": {
            "body": "Hello",
            "version": 1,
            "updated_at": by_action["template.update"]["before"]["updated_at"],
        },
        "after": {
            "body": "Hi",
            "version": 2,
            "updated_at": by_action["template.update"]["after"]["updated_at"],
        },
    }
    assert by_action["recipient.update"]["before"]["timezone"] == "Europe/Paris"
    assert by_action["recipient.update"]["after"]["timezone"] == "UTC"
    assert by_action["recipient.create"]["after"]["push_tokens"] == "[redacted]"
    assert by_action["recipient.delete"]["before"]["email"] == "ada@example.com"
    assert by_action["schedule.create"]["after"]["notification"]["recipient"] == (
        "https://hooks.example.com/[redacted]"
    )
    assert by_action["api_key.create"]["after"]["scopes"] == ["send"]
    assert by_action["dead_letter.replay_bulk"]["after"]["replayed"] == 2
    assert by_action["template.delete"]["before"]["name"] == "welcome"


def test_another_tenants_entries_are_not_listed(
    client: TestClient, tenant: Tenant, factory: sessionmaker[Session]
) -> None:
    stranger = new_tenant(factory)
    _ok(client.post("/v1/templates", json=TEMPLATE, headers=auth(tenant)), 201)

    assert _entries(client, stranger) == []
    assert [entry["action"] for entry in _entries(client, tenant)] == ["template.create"]


def test_reading_the_log_needs_the_admin_scope(client: TestClient, factory: sessionmaker[Session]) -> None:
    sender = new_tenant(factory, scopes="send,read")
    response = client.get("/v1/audit-log", headers=auth(sender))
    assert response.status_code == 403 and "admin" in response.json()["detail"]
    assert client.get("/v1/audit-log").status_code == 401


def test_a_refused_change_leaves_no_entry(client: TestClient, tenant: Tenant) -> None:
    _ok(client.post("/v1/templates", json=TEMPLATE, headers=auth(tenant)), 201)

    assert client.post("/v1/templates", json=TEMPLATE, headers=auth(tenant)).status_code == 409
    assert (
        client.put("/v1/templates/nope", json={**TEMPLATE, "name": "nope"}, headers=auth(tenant)).status_code
        == 404
    )
    assert client.delete(f"/v1/api-keys/{uuid.uuid4()}", headers=auth(tenant)).status_code == 404

    assert [entry["action"] for entry in _entries(client, tenant)] == ["template.create"]


def test_the_entry_is_rolled_back_with_a_change_that_fails_after_it(
    factory: sessionmaker[Session], tenant: Tenant
) -> None:
    template = TemplateIn.model_validate(TEMPLATE)
    with transaction(factory) as session:
        create_template(session, tenant_id=tenant.id, request=template)

    with pytest.raises(Conflict), transaction(factory) as session:
        record_change(session, Operator(tenant.id), "template.create", "template", "welcome")
        create_template(session, tenant_id=tenant.id, request=template)

    with factory() as session:
        assert session.scalar(select(func.count()).where(AuditEntry.tenant_id == tenant.id)) == 0


def test_the_log_is_paged_newest_first_and_filtered(
    client: TestClient, tenant: Tenant, factory: sessionmaker[Session]
) -> None:
    operator = Operator(tenant.id)
    for number in range(5):
        with transaction(factory) as session:
            record_change(session, operator, "template.update", "template", f"t{number % 2}")
    with transaction(factory) as session:
        record_change(session, operator, "schedule.pause", "schedule", "s1")

    seen: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = _ok(client.get("/v1/audit-log", params=params, headers=auth(tenant)))
        assert len(page["items"]) <= 2
        seen += page["items"]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]

    assert [entry["object_id"] for entry in seen] == ["s1", "t0", "t1", "t0", "t1", "t0"]
    assert {entry["actor"] for entry in seen} == {"cli"}
    assert len(_entries(client, tenant, action="template.update")) == 5
    assert [e["object_id"] for e in _entries(client, tenant, object_type="template", object_id="t1")] == [
        "t1",
        "t1",
    ]
    assert _entries(client, tenant, object_type="schedule", object_id="t1") == []
    bad = client.get("/v1/audit-log", params={"cursor": "nonsense"}, headers=auth(tenant))
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["query", "cursor"]
