"""Topic subscriptions, topic sends and fan-out reads through the gateway in-process (FastAPI
TestClient, lifespan running) against the test database. The fan-out itself: tests/topics."""

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import Tenant
from tests.services.api.conftest import auth

EMAIL = {"channel": "email", "content": {"subject": "News", "body": "Hello"}}


def _errors(response: httpx.Response) -> list[list[Any]]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return [error["loc"] for error in response.json()["errors"]]


def _subscribe(client: TestClient, tenant: Tenant, key: str, user_ids: list[str]) -> httpx.Response:
    return client.put(f"/v1/topics/{key}/subscribers", json={"user_ids": user_ids}, headers=auth(tenant))


def test_subscribing_is_idempotent_and_the_topic_counts_its_subscribers(
    client: TestClient, tenant: Tenant
) -> None:
    first = _subscribe(client, tenant, "orders.shipped", ["u-1", "u-2", "u-2"])
    again = _subscribe(client, tenant, "orders.shipped", ["u-2", "u-3"])

    assert (first.status_code, first.json()) == (200, {"key": "orders.shipped", "subscribers": 2, "added": 2})
    assert again.json() == {"key": "orders.shipped", "subscribers": 3, "added": 1}
    topic = client.get("/v1/topics/orders.shipped", headers=auth(tenant))
    assert (topic.status_code, topic.json()) == (200, {"key": "orders.shipped", "subscribers": 3})


def test_unsubscribing_removes_those_subscribed_and_the_last_one_ends_the_topic(
    client: TestClient, tenant: Tenant
) -> None:
    _subscribe(client, tenant, "news", ["a", "b"])

    removed = client.request(
        "DELETE", "/v1/topics/news/subscribers", json={"user_ids": ["a", "nobody"]}, headers=auth(tenant)
    )
    assert removed.json() == {"key": "news", "subscribers": 1, "removed": 1}
    client.request("DELETE", "/v1/topics/news/subscribers", json={"user_ids": ["b"]}, headers=auth(tenant))
    assert client.get("/v1/topics/news", headers=auth(tenant)).status_code == 404


def test_subscribers_are_listed_in_pages_by_cursor(client: TestClient, tenant: Tenant) -> None:
    users = [f"user-{index:03}" for index in range(25)]
    _subscribe(client, tenant, "digest", list(reversed(users)))

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/topics/digest/subscribers", params=params, headers=auth(tenant)).json()
        seen += [item["user_id"] for item in page["items"]]
        assert all(item["subscribed_at"] for item in page["items"])
        if (cursor := page["next_cursor"]) is None:
            break
    assert seen == users
    bad = client.get("/v1/topics/digest/subscribers", params={"cursor": "AA=="}, headers=auth(tenant))
    assert _errors(bad) == [["query", "cursor"]]


@pytest.mark.parametrize(
    ("key", "body", "where"),
    [
        ("ok", {"user_ids": []}, ["body", "user_ids"]),
        ("ok", {"user_ids": [f"u-{index}" for index in range(1001)]}, ["body", "user_ids"]),
        ("ok", {"user_ids": ["fine", "x" * 256]}, ["body", "user_ids", 1]),
        ("ok", {"user_ids": ["fine", ""]}, ["body", "user_ids", 1]),
        ("ok", {"user_ids": ["nul\u0000"]}, ["body", "user_ids", 0]),
        ("ok", {"users": ["u-1"]}, ["body", "user_ids"]),
        ("has space", {"user_ids": ["u-1"]}, ["path", "key"]),
        ("-leading-dash", {"user_ids": ["u-1"]}, ["path", "key"]),
        ("k" * 129, {"user_ids": ["u-1"]}, ["path", "key"]),
    ],
)
def test_out_of_bounds_keys_and_user_ids_are_refused_naming_the_field(
    client: TestClient, tenant: Tenant, key: str, body: dict[str, Any], where: list[Any]
) -> None:
    response = client.put(f"/v1/topics/{key}/subscribers", json=body, headers=auth(tenant))

    assert where in _errors(response)


def test_a_thousand_subscribers_fit_in_one_call(client: TestClient, tenant: Tenant) -> None:
    response = _subscribe(client, tenant, "big", [f"u-{index}" for index in range(1000)])

    assert response.json()["added"] == 1000


def test_another_tenants_topic_and_fanout_are_not_found(
    client: TestClient, tenant: Tenant, make_tenant: Callable[..., Tenant]
) -> None:
    other = make_tenant()
    _subscribe(client, tenant, "private", ["u-1"])
    fanout = client.post("/v1/notifications", json={**EMAIL, "topic": "private"}, headers=auth(tenant)).json()

    for path in (
        "/v1/topics/private",
        "/v1/topics/private/subscribers",
        f"/v1/fanouts/{fanout['fanout_id']}",
    ):
        assert client.get(path, headers=auth(other)).status_code == 404, path
    assert client.post(f"/v1/fanouts/{fanout['fanout_id']}/cancel", headers=auth(other)).status_code == 404
    sent = client.post("/v1/notifications", json={**EMAIL, "topic": "private"}, headers=auth(other))
    assert sent.status_code == 404


def test_writes_need_the_send_scope_and_reads_the_read_scope(
    client: TestClient, make_tenant: Callable[..., Tenant]
) -> None:
    reader, sender = make_tenant("read"), make_tenant("send")

    assert _subscribe(client, reader, "t", ["u-1"]).status_code == 403
    assert _subscribe(client, sender, "t", ["u-1"]).status_code == 200
    assert client.get("/v1/topics/t", headers=auth(sender)).status_code == 403


def test_a_topic_send_answers_with_its_committed_fanout(client: TestClient, tenant: Tenant) -> None:
    _subscribe(client, tenant, "launch", ["u-1", "u-2", "u-3"])

    response = client.post("/v1/notifications", json={**EMAIL, "topic": "launch"}, headers=auth(tenant))

    assert response.status_code == 202, response.text
    body = response.json()
    assert body == {"topic": "launch", "fanout_id": body["fanout_id"], "recipients": 3, "status": "running"}
    fanout = client.get(f"/v1/fanouts/{body['fanout_id']}", headers=auth(tenant)).json()
    assert (fanout["topic"], fanout["recipients"], fanout["notification"]["channel"]) == (
        "launch",
        3,
        "email",
    )
    assert fanout["status"] in ("running", "done")  # The session's stack may run it already.


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({**EMAIL, "topic": "launch", "user_id": "u-1"}, ["body", "topic"]),
        ({**EMAIL, "topic": "launch", "recipient": "ada@example.com"}, ["body", "topic"]),
        ({**EMAIL, "topic": "bad topic"}, ["body", "topic"]),
        ({**EMAIL, "channel": "webhook", "topic": "launch"}, ["body", "topic"]),
        # Refused up front, as a direct send would be, rather than skipping every subscriber.
        ({"channel": "email", "template": "no-such-template", "topic": "launch"}, ["body", "template"]),
        (
            {**EMAIL, "topic": "launch", "escalate": {"after_seconds": 60, "channels": ["sms"]}},
            ["body", "escalate"],
        ),
        ({**EMAIL, "topic": "launch", "digest": {"key": "k", "window_seconds": 60}}, ["body", "digest"]),
    ],
)
def test_invalid_topic_sends_are_refused_naming_the_field(
    client: TestClient, tenant: Tenant, body: dict[str, Any], where: list[Any]
) -> None:
    _subscribe(client, tenant, "launch", ["u-1"])

    assert where in _errors(client.post("/v1/notifications", json=body, headers=auth(tenant)))


def test_a_topic_without_subscribers_is_not_found(client: TestClient, tenant: Tenant) -> None:
    response = client.post("/v1/notifications", json={**EMAIL, "topic": "nobody-here"}, headers=auth(tenant))

    assert response.status_code == 404
    assert "no subscribers" in response.json()["detail"]


def test_topic_sends_take_no_idempotency_key_and_stay_out_of_batches_and_schedules(
    client: TestClient, tenant: Tenant
) -> None:
    _subscribe(client, tenant, "launch", ["u-1"])
    body = {**EMAIL, "topic": "launch"}

    keyed = client.post("/v1/notifications", json=body, headers={**auth(tenant), "Idempotency-Key": "k-1"})
    assert _errors(keyed) == [["header", "idempotency-key"]]
    batch = client.post("/v1/notifications/batch", json={"notifications": [body]}, headers=auth(tenant))
    assert batch.json()["results"][0]["error"]["errors"][0]["loc"] == ["body", "notifications", 0, "topic"]
    schedule = client.post(
        "/v1/schedules",
        json={"cron": "0 9 * * *", "timezone": "UTC", "notification": body},
        headers=auth(tenant),
    )
    assert _errors(schedule) == [["body", "notification", "topic"]]


def test_cancelling_a_fanout_stops_it_and_a_done_one_cannot_be(client: TestClient, tenant: Tenant) -> None:
    _subscribe(client, tenant, "launch", ["u-1"])
    fanout_id = client.post(
        "/v1/notifications", json={**EMAIL, "topic": "launch"}, headers=auth(tenant)
    ).json()["fanout_id"]

    cancelled = client.post(f"/v1/fanouts/{fanout_id}/cancel", headers=auth(tenant))
    if cancelled.status_code == 409:  # The session's stack finished it first.
        assert client.get(f"/v1/fanouts/{fanout_id}", headers=auth(tenant)).json()["status"] == "done"
        return
    assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")
    assert cancelled.json()["finished_at"] is not None
    again = client.post(f"/v1/fanouts/{fanout_id}/cancel", headers=auth(tenant))
    assert (again.status_code, again.json()["status"]) == (200, "cancelled")
