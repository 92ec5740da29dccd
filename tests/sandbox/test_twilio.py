"""The sandbox's Twilio-style Messages API, driven in-process like a Twilio client would."""

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from services.sandbox.app import create_app
from services.sandbox.faults import FaultInjector
from services.sandbox.store import MessageStore

ACCOUNT = "AC" + "a" * 32
OTHER_ACCOUNT = "AC" + "b" * 32


@pytest.fixture
def sandbox() -> Iterator[TestClient]:
    with TestClient(create_app(MessageStore(max_messages=100), FaultInjector())) as client:
        yield client


def _send(
    client: TestClient, account: str = ACCOUNT, *, auth: tuple[str, str] | None = None, **form: str
) -> tuple[int, dict]:
    response = client.post(
        f"/2010-04-01/Accounts/{account}/Messages.json",
        data=form or {"To": "+14155550100", "From": "+15005550006", "Body": "Your code is 123456"},
        auth=auth or (account, "any-token"),
    )
    return response.status_code, response.json()


def _messages(client: TestClient, **params: str) -> list[dict]:
    items: list[dict] = client.get("/api/messages", params=params).json()["items"]
    return items


def test_a_message_is_queued_and_stored_like_twilio_would(sandbox: TestClient) -> None:
    status, body = _send(sandbox)
    assert status == 201
    assert re.fullmatch(r"SM[0-9a-f]{32}", body["sid"])
    assert body["status"] == "queued"
    assert (body["to"], body["from"], body["body"]) == ("+14155550100", "+15005550006", "Your code is 123456")
    assert body["num_segments"] == "1"
    assert body["account_sid"] == ACCOUNT

    [message] = _messages(sandbox, channel="sms")
    assert (message["recipient"], message["body"], message["provider"]) == (
        "+14155550100",
        "Your code is 123456",
        "twilio",
    )
    assert message["headers"]["From"] == "+15005550006"
    assert message["headers"]["AccountSid"] == ACCOUNT


def test_a_whatsapp_address_stores_a_whatsapp_message_and_repeats_are_kept(sandbox: TestClient) -> None:
    form = {"To": "whatsapp:+14155550100", "From": "whatsapp:+15005550006", "Body": "Hi"}
    assert _send(sandbox, **form)[0] == 201
    assert _send(sandbox, **form)[0] == 201  # no idempotency key at Twilio: two messages
    messages = _messages(sandbox, channel="whatsapp")
    assert [m["recipient"] for m in messages] == ["+14155550100", "+14155550100"]
    assert _messages(sandbox, channel="sms") == []


def test_basic_auth_for_the_account_in_the_path_is_required(sandbox: TestClient) -> None:
    response = sandbox.post(f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json", data={"To": "+1", "Body": "x"})
    assert response.status_code == 401
    assert response.json() == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }
    assert _send(sandbox, auth=(OTHER_ACCOUNT, "token"))[0] == 401
    assert _messages(sandbox) == []


@pytest.mark.parametrize(
    ("form", "code"),
    [({"Body": "no recipient"}, 21604), ({"To": "+14155550100"}, 21602), ({"To": "+1", "Body": ""}, 21602)],
)
def test_to_and_body_are_required(sandbox: TestClient, form: dict[str, str], code: int) -> None:
    status, body = _send(sandbox, **form)
    assert (status, body["code"], body["status"]) == (400, code, 400)
    assert _messages(sandbox) == []


def test_a_fault_answers_its_status_with_a_twilio_error(sandbox: TestClient) -> None:
    sandbox.post("/api/faults", json={"endpoint": "twilio", "status": 503, "fail_next": 1}).raise_for_status()
    status, body = _send(sandbox)
    assert (status, body["code"]) == (503, 20503)
    assert _send(sandbox)[0] == 201

    sandbox.post("/api/faults", json={"endpoint": "twilio", "status": 429, "rate": 1.0}).raise_for_status()
    response = sandbox.post(
        f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json",
        data={"To": "+14155550100", "Body": "x"},
        auth=(ACCOUNT, "t"),
    )
    assert (response.status_code, response.headers["Retry-After"]) == (429, "1")
    assert len(_messages(sandbox)) == 1

    sandbox.post("/api/faults", json={"endpoint": "twilio", "status": 429, "rate": 1.0, "retry_after": 7})
    response = sandbox.post(
        f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json",
        data={"To": "+14155550100", "Body": "x"},
        auth=(ACCOUNT, "t"),
    )
    assert (response.status_code, response.headers["Retry-After"]) == (429, "7")


def test_a_fault_for_one_account_leaves_other_accounts_alone(sandbox: TestClient) -> None:
    fault = {"endpoint": "twilio", "status": 503, "rate": 1.0, "account": ACCOUNT}
    assert sandbox.post("/api/faults", json=fault).json()["account"] == ACCOUNT
    assert _send(sandbox, ACCOUNT)[0] == 503
    assert _send(sandbox, OTHER_ACCOUNT)[0] == 201
    [message] = _messages(sandbox)
    assert message["headers"]["AccountSid"] == OTHER_ACCOUNT


def test_an_smtp_fault_leaves_twilio_alone(sandbox: TestClient) -> None:
    sandbox.post("/api/faults", json={"endpoint": "smtp", "status": 451, "rate": 1.0}).raise_for_status()
    assert _send(sandbox)[0] == 201
