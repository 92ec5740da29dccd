"""The sandbox's webhook receiver: storing deliveries, faults, and signature verification."""

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from pulse.webhooks.secrets import new_secret
from pulse.webhooks.signing import signed_headers
from services.sandbox.app import create_app
from services.sandbox.faults import FaultInjector
from services.sandbox.store import MessageStore

BODY = '{"type":"notification","id":"n-1","data":{"body":"hi"}}'


@pytest.fixture
def sandbox() -> Iterator[TestClient]:
    with TestClient(create_app(MessageStore(max_messages=100), FaultInjector())) as client:
        yield client


def _post(client: TestClient, path: str, headers: dict[str, str], body: str = BODY) -> int:
    return client.post(
        path, content=body, headers={"Content-Type": "application/json", **headers}
    ).status_code


def _messages(client: TestClient, **params: str) -> list[dict]:
    items: list[dict] = client.get("/api/messages", params={"channel": "webhook", **params}).json()["items"]
    return items


def test_a_delivery_is_stored_with_its_path_body_and_headers(sandbox: TestClient) -> None:
    headers = signed_headers([new_secret()], "n-1", BODY)
    assert _post(sandbox, "/webhooks/orders/eu", headers) == 200
    [message] = _messages(sandbox, recipient="/webhooks/orders/eu")
    assert (message["channel"], message["provider"], message["body"]) == ("webhook", "webhook", BODY)
    assert message["headers"]["webhook-id"] == "n-1"
    assert message["headers"]["webhook-signature"] == headers["webhook-signature"]
    assert "verified" not in message["headers"]  # no secret registered


def test_repeats_of_a_webhook_id_are_collapsed(sandbox: TestClient) -> None:
    for _ in range(3):
        assert _post(sandbox, "/webhooks/a", {"webhook-id": "same"}) == 200
    [message] = _messages(sandbox)
    assert message["repeats"] == 2


def test_faults_apply_and_429_says_when_to_retry(sandbox: TestClient) -> None:
    sandbox.post("/api/faults", json={"endpoint": "webhook", "status": 429, "fail_next": 1})
    response = sandbox.post("/webhooks/a", content=BODY, headers={"webhook-id": "x"})
    assert (response.status_code, response.headers["Retry-After"]) == (429, "1")
    sandbox.post("/api/faults", json={"endpoint": "webhook", "status": 410, "fail_next": 1})
    assert _post(sandbox, "/webhooks/a", {"webhook-id": "x"}) == 410
    assert _messages(sandbox) == []
    assert _post(sandbox, "/webhooks/a", {"webhook-id": "x"}) == 200
    assert len(_messages(sandbox)) == 1


def test_a_registered_secret_verifies_signatures(sandbox: TestClient) -> None:
    secret = new_secret()
    assert sandbox.post("/api/webhook-secret", json={"secret": secret}).json() == {"secret": secret}
    _post(sandbox, "/webhooks/good", signed_headers([secret], "good", BODY))
    _post(sandbox, "/webhooks/bad", signed_headers([new_secret()], "bad", BODY))
    stale = signed_headers([secret], "stale", BODY, now=datetime(2020, 1, 1, tzinfo=UTC))
    _post(sandbox, "/webhooks/stale", stale)
    verified = {m["recipient"]: m["headers"]["verified"] for m in _messages(sandbox)}
    assert verified == {"/webhooks/good": "true", "/webhooks/bad": "false", "/webhooks/stale": "false"}
    sandbox.post("/api/webhook-secret", json={"secret": None})
    _post(sandbox, "/webhooks/unchecked", {"webhook-id": "u"})
    [unchecked] = _messages(sandbox, recipient="/webhooks/unchecked")
    assert "verified" not in unchecked["headers"]


def test_a_fault_for_an_account_applies_to_that_receiver_path_only(sandbox: TestClient) -> None:
    sandbox.post(
        "/api/faults", json={"endpoint": "webhook", "status": 503, "rate": 1.0, "account": "broken/a"}
    )
    assert _post(sandbox, "/webhooks/broken/a", {"webhook-id": "1"}) == 503
    assert _post(sandbox, "/webhooks/fine", {"webhook-id": "2"}) == 200
