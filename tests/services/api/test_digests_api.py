"""Digested sends through the gateway: validation, the answer, idempotency and rate limits."""

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from pulse.db import transaction
from pulse.tenants.service import configure_tenant
from tests.conftest import Tenant
from tests.services.api.conftest import auth

COMMENTS = {
    "name": "comments",
    "channel": "email",
    "subject": "{{ count }} new comments",
    "body": "{% for e in events %}{{ e.author }}: {{ e.text }}\n{% endfor %}",
    "variables": ["events", "count"],
}


@pytest.fixture
def client(gateway: TestClient, tenant: Tenant) -> TestClient:
    gateway.headers.update(auth(tenant))
    assert gateway.post("/v1/templates", json=COMMENTS).status_code == 201
    return gateway


def _digested(text: str = "Nice", **fields: Any) -> dict[str, Any]:
    return {
        "channel": "email",
        "recipient": "ada@example.com",
        "user_id": "u-1",
        "template": "comments",
        "variables": {"author": "Bob", "text": text},
        "digest": {"key": "comments", "window_seconds": 600},
        **fields,
    }


def _error_locations(response: Any) -> list[list[Any]]:
    assert response.status_code == 422, response.text
    return [error["loc"] for error in response.json()["errors"]]


@pytest.mark.parametrize(
    ("change", "location", "says"),
    [
        ({"user_id": None}, ["body", "digest"], "user_id"),
        (
            {"template": None, "variables": {}, "content": {"subject": "s", "body": "b"}},
            ["body", "digest"],
            "template",
        ),
        ({"send_at": "2030-01-01T09:00:00Z"}, ["body", "digest"], "send_at"),
        ({"digest": {"key": "has space", "window_seconds": 600}}, ["body", "digest", "key"], "pattern"),
        ({"digest": {"key": "k" * 101, "window_seconds": 600}}, ["body", "digest", "key"], "pattern"),
        ({"digest": {"key": "c", "window_seconds": 9}}, ["body", "digest", "window_seconds"], "10"),
        ({"digest": {"key": "c", "window_seconds": 604_801}}, ["body", "digest", "window_seconds"], "604800"),
        (
            {"digest": {"key": "c", "window_seconds": 60, "max_events": 1}},
            ["body", "digest", "max_events"],
            "2",
        ),
        (
            {"digest": {"key": "c", "window_seconds": 60, "max_events": 1001}},
            ["body", "digest", "max_events"],
            "1000",
        ),
        ({"digest": {"key": "c"}}, ["body", "digest", "window_seconds"], "required"),
        ({"digest": {"key": "c", "window_seconds": 60, "every": 1}}, ["body", "digest", "every"], "xtra"),
        ({"variables": {"author": "Bob"}}, ["body", "variables"], "text"),
    ],
)
def test_an_incomplete_digested_send_is_a_422_naming_the_field(
    client: TestClient, change: dict[str, Any], location: list[Any], says: str
) -> None:
    body = {name: value for name, value in {**_digested(), **change}.items() if value is not None}
    response = client.post("/v1/notifications", json=body)

    assert location in _error_locations(response)
    assert says in response.text


def test_a_topic_send_cannot_be_digested(client: TestClient) -> None:
    body = {**_digested(), "topic": "news"}
    del body["recipient"], body["user_id"]
    response = client.post("/v1/notifications", json=body)

    assert ["body", "digest"] in _error_locations(response)
    assert "topic" in response.text


def test_an_inapp_digest_takes_its_user_from_recipient_as_any_inapp_send(client: TestClient) -> None:
    inbox = {**COMMENTS, "name": "inbox-comments", "channel": "inapp", "subject": None}
    assert client.post("/v1/templates", json=inbox).status_code == 201
    body = {**_digested(), "channel": "inapp", "recipient": "u-1", "template": "inbox-comments"}
    del body["user_id"]

    response = client.post("/v1/notifications", json=body)

    assert response.status_code == 202, response.text
    assert (response.json()["status"], response.json()["user_id"]) == ("digested", "u-1")


def test_digested_sends_answer_202_digested_with_the_combined_notification_s_id(client: TestClient) -> None:
    answers = [client.post("/v1/notifications", json=_digested(text)) for text in ("a", "b")]

    assert [answer.status_code for answer in answers] == [202, 202]
    first, second = (answer.json() for answer in answers)
    assert first["status"] == second["status"] == "digested"
    assert first["digest_id"] == second["digest_id"]
    assert (first["event_count"], second["event_count"]) == (1, 2)
    assert first["closes_at"] == second["closes_at"]
    combined = client.get(f"/v1/notifications/{first['digest_id']}").json()
    assert (combined["status"], combined["deferred_reason"]) == ("scheduled", "digest")
    assert combined["user_id"] == "u-1" and combined["template"] == "comments"


def test_forcing_a_digest_closes_its_window_and_sends_what_it_collected_even_in_quiet_hours(
    gateway: TestClient, make_tenant: Callable[..., Tenant], session_factory: sessionmaker[Session]
) -> None:
    night_owl = make_tenant()
    with transaction(session_factory) as session:
        configure_tenant(session, name=night_owl.name, quiet_hours="00:00-23:59:59")
    headers = auth(night_owl)
    assert gateway.post("/v1/templates", json=COMMENTS, headers=headers).status_code == 201
    first, second = (
        gateway.post("/v1/notifications", json=_digested(text), headers=headers).json() for text in ("a", "b")
    )
    digest_id = first["digest_id"]

    forced = gateway.post(f"/v1/notifications/{digest_id}/force", headers=headers)

    assert second["digest_id"] == digest_id
    assert forced.status_code == 202, forced.text
    assert forced.json()["status"] == "queued"
    assert forced.json()["content"]["body"] == "Bob: a\nBob: b\n"
    third = gateway.post("/v1/notifications", json=_digested("c"), headers=headers).json()
    assert third["digest_id"] != digest_id and third["event_count"] == 1
    assert gateway.post(f"/v1/notifications/{third['digest_id']}/cancel", headers=headers).status_code == 200
    assert gateway.post(f"/v1/notifications/{third['digest_id']}/force", headers=headers).status_code == 409


def test_an_idempotent_repeat_of_a_digested_send_is_not_collected_twice(client: TestClient) -> None:
    key = {"Idempotency-Key": f"comment-{uuid.uuid4()}"}
    opening = client.post("/v1/notifications", json=_digested("a"))
    first = client.post("/v1/notifications", json=_digested("b"), headers=key)
    again = client.post("/v1/notifications", json=_digested("b"), headers=key)
    other_body = client.post("/v1/notifications", json=_digested("c"), headers=key)

    assert first.status_code == 202 and again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["digest_id"] == first.json()["digest_id"] == opening.json()["digest_id"]
    assert again.json()["event_count"] == 2
    assert other_body.status_code == 409
    assert client.post("/v1/notifications", json=_digested("d")).json()["event_count"] == 3


def test_only_the_send_that_opens_a_window_counts_against_the_rate_limit(
    gateway: TestClient, make_tenant: Callable[..., Tenant], session_factory: sessionmaker[Session]
) -> None:
    strict = make_tenant()
    with transaction(session_factory) as session:
        configure_tenant(session, name=strict.name, rate_limit="1", rate_limit_window_seconds=3600)
    headers = auth(strict)
    assert gateway.post("/v1/templates", json=COMMENTS, headers=headers).status_code == 201

    digested = [gateway.post("/v1/notifications", json=_digested(str(n)), headers=headers) for n in range(3)]
    other_key = {**_digested(), "digest": {"key": "likes", "window_seconds": 600}}
    refused = gateway.post("/v1/notifications", json=other_key, headers=headers)

    assert [response.status_code for response in digested] == [202, 202, 202]
    assert digested[0].headers["RateLimit-Remaining"] == "0"
    assert refused.status_code == 429


def test_a_batch_or_schedule_cannot_carry_a_digest(client: TestClient) -> None:
    batch = client.post("/v1/notifications/batch", json={"notifications": [_digested()]})
    schedule = client.post("/v1/schedules", json={"cron": "0 9 * * *", "notification": _digested()})

    assert batch.status_code == 202
    [result] = batch.json()["results"]
    assert result["error"]["errors"][0]["loc"] == ["body", "notifications", 0, "digest"]
    assert ["body", "notification", "digest"] in _error_locations(schedule)


def test_the_openapi_schema_describes_the_digested_answer(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    answer = schema["paths"]["/v1/notifications"]["post"]["responses"]["202"]["content"]["application/json"]
    assert {"$ref": "#/components/schemas/DigestedSend"} in answer["schema"]["anyOf"]
    assert "digest" in schema["components"]["schemas"]["NotificationRequest"]["properties"]
