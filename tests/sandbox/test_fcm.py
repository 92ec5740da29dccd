"""The sandbox's FCM HTTP v1-style send API, driven in-process like an FCM client would."""

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.sandbox.app import create_app
from services.sandbox.faults import FaultInjector
from services.sandbox.store import MessageStore

PATH = "/v1/projects/pulse-sandbox/messages:send"
AUTH = {"Authorization": "Bearer sandbox-token"}


@pytest.fixture
def sandbox() -> Iterator[TestClient]:
    with TestClient(create_app(MessageStore(max_messages=100), FaultInjector())) as client:
        yield client


def _message(device: str = "device-1", **extra: Any) -> dict[str, Any]:
    return {
        "message": {
            "token": device,
            "notification": {"title": "Your order", "body": "It has shipped"},
            "data": {"order": "A-1", "count": "2"},
            **extra,
        }
    }


def _messages(client: TestClient, **params: str) -> list[dict]:
    items: list[dict] = client.get("/api/messages", params=params).json()["items"]
    return items


def test_a_message_is_sent_and_stored_like_fcm_would(sandbox: TestClient) -> None:
    response = sandbox.post(PATH, json=_message(), headers=AUTH)
    assert response.status_code == 200
    assert re.fullmatch(r"projects/pulse-sandbox/messages/[0-9a-f]+", response.json()["name"])

    [message] = _messages(sandbox, channel="push")
    assert (message["recipient"], message["provider"]) == ("device-1", "fcm")
    assert (message["subject"], message["body"]) == ("Your order", "It has shipped")
    assert message["headers"] == {"order": "A-1", "count": "2"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer "}])
def test_a_request_without_a_bearer_token_is_unauthenticated(sandbox: TestClient, headers: dict) -> None:
    response = sandbox.post(PATH, json=_message(), headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (401, "UNAUTHENTICATED")
    assert _messages(sandbox) == []


@pytest.mark.parametrize("body", [{}, {"message": {}}, {"message": {"token": ""}}, {"message": {"token": 7}}])
def test_a_message_without_a_token_is_an_invalid_argument(sandbox: TestClient, body: dict) -> None:
    response = sandbox.post(PATH, json=body, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_tokens_starting_with_invalid_are_unregistered(sandbox: TestClient) -> None:
    response = sandbox.post(PATH, json=_message("invalid-0123"), headers=AUTH)
    assert response.status_code == 404
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (404, "NOT_FOUND")
    assert error["details"] == [
        {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}
    ]
    assert _messages(sandbox) == []


def test_faults_for_fcm_fail_the_next_sends_with_retry_after(sandbox: TestClient) -> None:
    sandbox.post("/api/faults", json={"endpoint": "fcm", "status": 503, "fail_next": 1}).raise_for_status()
    failed = sandbox.post(PATH, json=_message(), headers=AUTH)
    assert failed.status_code == 503
    assert failed.headers["Retry-After"] == "1"
    assert failed.json()["error"]["status"] == "UNAVAILABLE"
    assert sandbox.post(PATH, json=_message(), headers=AUTH).status_code == 200
    assert len(_messages(sandbox, channel="push")) == 1


def test_twilio_faults_leave_fcm_alone(sandbox: TestClient) -> None:
    sandbox.post("/api/faults", json={"endpoint": "twilio", "status": 503, "rate": 1.0}).raise_for_status()
    assert sandbox.post(PATH, json=_message(), headers=AUTH).status_code == 200
