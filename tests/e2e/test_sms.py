"""End to end: gateway → RabbitMQ → sms worker → Twilio's Messages API (the sandbox), with failover
from the primary Twilio account to the secondary one and the primary's circuit breaker."""

import random
from collections.abc import Iterator

import httpx
import pytest

from devtools.stack import Stack, metric_value
from tests.conftest import PRIMARY_TWILIO_ACCOUNT, Tenant, wait_for_status, wait_until
from tests.e2e.test_email_delivery import _dead_lettered_ids

TWILIO_CIRCUIT = 'pulse_circuit_state{provider="twilio"}'


@pytest.fixture
def sandbox(stack: Stack) -> Iterator[httpx.Client]:
    with stack.sandbox() as client:
        yield client
        client.delete("/api/faults")


_AREA_CODES = (201, 202, 212, 213, 305, 312, 415, 617, 646, 702, 713, 718, 805, 917)


def _phone_number() -> str:
    """A fresh US 555 number: valid for libphonenumber, and never shared with another test's."""
    return f"+1{random.choice(_AREA_CODES)}555{random.randint(0, 9999):04d}"


def _send(client: httpx.Client, channel: str, recipient: str, body: str = "Your code is 123456") -> str:
    response = client.post(
        "/v1/notifications", json={"channel": channel, "recipient": recipient, "content": {"body": body}}
    )
    assert response.status_code == 202, response.text
    notification_id: str = response.json()["id"]
    return notification_id


def _messages(sandbox: httpx.Client, channel: str, recipient: str) -> list[dict]:
    params = {"channel": channel, "recipient": recipient}
    items: list[dict] = sandbox.get("/api/messages", params=params).json()["items"]
    return items


def test_an_sms_and_a_whatsapp_message_arrive_and_are_marked_delivered(
    stack: Stack, tenant: Tenant, sandbox: httpx.Client
) -> None:
    sms_to, whatsapp_to = _phone_number(), _phone_number()
    with stack.client(tenant.api_key) as client:
        sms_id = _send(client, "sms", sms_to, "Your code is 123456")
        whatsapp_id = _send(client, "whatsapp", f"whatsapp:{whatsapp_to}", "Your parcel is on its way 📦")
        delivered = [wait_for_status(client, i, "delivered") for i in (sms_id, whatsapp_id)]

    for notification in delivered:
        assert notification["attempt_count"] == 1
        [attempt] = notification["attempts"]
        assert (attempt["outcome"], attempt["provider"]) == ("delivered", "twilio")
    assert delivered[1]["recipient"] == whatsapp_to  # stored in E.164, without the prefix
    # The segments the carrier bills are recorded with the attempt.
    sms_details = delivered[0]["attempts"][0]["details"]
    assert (sms_details["segments"], sms_details["encoding"]) == (1, "GSM-7")
    assert sms_details["message_sid"].startswith("SM")
    # The emoji needs UCS-2 (26 characters + a surrogate pair: still one segment).
    whatsapp_details = delivered[1]["attempts"][0]["details"]
    assert (whatsapp_details["segments"], whatsapp_details["encoding"]) == (1, "UCS-2")

    [sms] = _messages(sandbox, "sms", sms_to)
    assert sms["body"] == "Your code is 123456"
    assert (sms["headers"]["To"], sms["headers"]["From"]) == (sms_to, "+15005550006")
    [whatsapp] = _messages(sandbox, "whatsapp", whatsapp_to)
    assert whatsapp["body"] == "Your parcel is on its way 📦"
    assert whatsapp["headers"]["To"] == f"whatsapp:{whatsapp_to}"
    assert whatsapp["headers"]["From"] == "whatsapp:+15005550006"


def test_a_ucs2_sms_over_70_characters_is_recorded_as_two_segments(
    stack: Stack, tenant: Tenant, sandbox: httpx.Client
) -> None:
    body = "Привет " * 10 + "Ж"  # Cyrillic needs UCS-2: 71 characters, one over a single SMS
    assert len(body) == 71
    with stack.client(tenant.api_key) as client:
        delivered = wait_for_status(client, _send(client, "sms", _phone_number(), body), "delivered")

    [attempt] = delivered["attempts"]
    assert attempt["outcome"] == "delivered"
    assert (attempt["details"]["segments"], attempt["details"]["encoding"]) == (2, "UCS-2")


def test_a_permanent_twilio_error_fails_the_notification_into_the_dead_letter_queue(
    stack: Stack, tenant: Tenant, sandbox: httpx.Client
) -> None:
    recipient = _phone_number()
    sandbox.post("/api/faults", json={"endpoint": "twilio", "status": 400, "fail_next": 1}).raise_for_status()
    with stack.client(tenant.api_key) as client:
        notification_id = _send(client, "sms", recipient)
        failed = wait_for_status(client, notification_id, "failed")

    assert "Twilio 400 (code 21211)" in failed["last_error"]
    [attempt] = failed["attempts"]
    assert (attempt["outcome"], attempt["provider"]) == ("failed", "twilio")
    assert attempt["details"] == {}
    assert _messages(sandbox, "sms", recipient) == []
    wait_until(
        lambda: notification_id in _dead_lettered_ids(stack.infrastructure.broker_url, "pulse.sms.dead"),
        timeout=10,
        what="the message in pulse.sms.dead",
    )


def test_a_failing_primary_account_fails_over_to_the_secondary_within_the_attempt(
    stack: Stack, tenant: Tenant, sandbox: httpx.Client
) -> None:
    recipient = _phone_number()
    fault = {"endpoint": "twilio", "status": 503, "fail_next": 1, "account": PRIMARY_TWILIO_ACCOUNT}
    sandbox.post("/api/faults", json=fault).raise_for_status()
    with stack.client(tenant.api_key) as client:
        delivered = wait_for_status(client, _send(client, "sms", recipient), "delivered")

    assert delivered["attempt_count"] == 1
    [attempt] = delivered["attempts"]
    assert (attempt["outcome"], attempt["provider"]) == ("delivered", "twilio-secondary")
    [message] = _messages(sandbox, "sms", recipient)
    assert message["headers"]["AccountSid"] != PRIMARY_TWILIO_ACCOUNT


def test_the_primary_accounts_circuit_opens_under_failures_and_closes_once_it_recovers(
    stack: Stack, tenant: Tenant, sandbox: httpx.Client
) -> None:
    worker_metrics = stack.metrics_url("sms_worker")
    fault = {"endpoint": "twilio", "status": 503, "rate": 1.0, "account": PRIMARY_TWILIO_ACCOUNT}
    sandbox.post("/api/faults", json=fault).raise_for_status()
    with stack.client(tenant.api_key) as client:
        # Each notification fails on the primary and goes out through the secondary meanwhile.
        failed_over = [_send(client, "sms", _phone_number()) for _ in range(3)]
        wait_until(
            lambda: metric_value(worker_metrics, TWILIO_CIRCUIT) == 1, what="the twilio circuit to open"
        )
        for notification_id in failed_over:
            [attempt] = wait_for_status(client, notification_id, "delivered")["attempts"]
            assert attempt["provider"] == "twilio-secondary"

        sandbox.delete("/api/faults").raise_for_status()

        # After the cooldown (2 s in tests) the next send is the probe that closes the circuit.
        def closed() -> bool:
            wait_for_status(client, _send(client, "sms", _phone_number()), "delivered")
            return metric_value(worker_metrics, TWILIO_CIRCUIT) == 0

        wait_until(closed, timeout=30, what="the twilio circuit to close")
        [attempt] = wait_for_status(client, _send(client, "sms", _phone_number()), "delivered")["attempts"]
        assert attempt["provider"] == "twilio"
