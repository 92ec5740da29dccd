"""The FCM provider against the sandbox's FCM HTTP v1 endpoint (in-process)."""

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from devtools.stack import free_port
from pulse.channels.http import Answer
from pulse.channels.push import FcmProvider, InvalidToken, classify_refusal, fcm_message
from pulse.delivery.providers import Claim
from pulse.errors import PermanentProviderError, TransientProviderError
from pulse.settings import FcmSettings
from pulse.vocabulary import Channel, Priority
from services.sandbox.faults import Fault, FaultInjector
from services.sandbox.store import MessageStore
from tests.channels.conftest import (
    SLOW_HEAD,
    RawServer,
    assert_cut_at_half_a_second,
    assert_read_in_little_memory,
    huge_answer,
)

HOST = "127.0.0.1"
TOKEN = "dGVzdC1kZXZpY2UtdG9rZW4:APA91b-sandbox"


def _provider(base_url: str, **kwargs: Any) -> FcmProvider:
    on_invalid_token = kwargs.pop("on_invalid_token", None)
    return FcmProvider(FcmSettings(base_url=base_url, **kwargs), on_invalid_token=on_invalid_token)


def _claim(recipient: str = TOKEN, **content: Any) -> Claim:
    return Claim(
        notification_id=uuid.uuid4(),
        tenant_id=uuid.uuid4(),
        channel=Channel.PUSH,
        priority=Priority.NORMAL,
        recipient=recipient,
        content=content or {"subject": "Your order", "body": "It has shipped", "data": {"order": "A-1"}},
        attempt_number=1,
        attempts_left=3,
        created_at=datetime.now(UTC),
    )


def test_the_send_body_has_fcm_v1s_shape() -> None:
    content = {
        "subject": "Hi",
        "body": "There",
        "html": None,
        "data": {"n": 3, "ok": True, "s": "x", "o": {}},
    }
    assert fcm_message("tok", content) == {
        "message": {
            "token": "tok",
            "notification": {"title": "Hi", "body": "There"},
            "data": {"n": "3", "ok": "true", "s": "x", "o": "{}"},
        }
    }
    # No subject: no title; no data: no data map.
    assert fcm_message("tok", {"subject": None, "body": "There"}) == {
        "message": {"token": "tok", "notification": {"body": "There"}}
    }


def test_a_push_message_reaches_the_sandbox_with_the_bearer_token(
    sandbox: tuple[str, MessageStore, FaultInjector],
) -> None:
    url, store, _ = sandbox
    seen: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        seen.append(request)

    provider = _provider(url, project_id="my-project", access_token=SecretStr("secret-token"))
    provider._client._client.event_hooks["request"].append(record)  # the BoundedClient's httpx client
    details = provider.send(_claim())

    assert details["message_name"].startswith("projects/my-project/messages/")
    [request] = seen
    assert request.url.path == "/v1/projects/my-project/messages:send"
    assert request.headers["Authorization"] == "Bearer secret-token"
    [message] = store.search(limit=10)[0]
    assert (message["channel"], message["provider"], message["recipient"]) == ("push", "fcm", TOKEN)
    assert (message["subject"], message["body"]) == ("Your order", "It has shipped")
    assert message["headers"] == {"order": "A-1"}


@pytest.mark.parametrize("status", [429, 500, 503])
def test_throttling_and_server_errors_are_transient_with_retry_after(
    sandbox: tuple[str, MessageStore, FaultInjector], status: int
) -> None:
    url, store, faults = sandbox
    faults.set_fault(Fault(endpoint="fcm", status=status, rate=1.0))
    with pytest.raises(TransientProviderError, match=f"FCM {status}") as raised:
        _provider(url).send(_claim())
    # The sandbox sends Retry-After on 429 and 503, as FCM does.
    assert raised.value.retry_after == (1.0 if status in (429, 503) else None)
    assert store.count() == 0


def test_an_unregistered_token_is_permanent_and_reported_with_its_tenant(
    sandbox: tuple[str, MessageStore, FaultInjector],
) -> None:
    url, store, _ = sandbox
    reported: list[tuple[uuid.UUID, str, str]] = []
    provider = _provider(url, on_invalid_token=lambda *report: reported.append(report))
    claim = _claim("invalid-abc123")
    with pytest.raises(PermanentProviderError, match=r"FCM 404 \(UNREGISTERED\)"):
        provider.send(claim)
    assert reported == [(claim.tenant_id, "invalid-abc123", "UNREGISTERED")]
    assert store.count() == 0


def test_a_failing_report_is_not_fatal(sandbox: tuple[str, MessageStore, FaultInjector]) -> None:
    url, _, _ = sandbox

    def broken(tenant_id: uuid.UUID, token: str, reason: str) -> None:
        raise RuntimeError("database down")

    with pytest.raises(PermanentProviderError, match=r"FCM 404 \(UNREGISTERED\)"):
        _provider(url, on_invalid_token=broken).send(_claim("invalid-abc123"))


@pytest.mark.parametrize("status", [400, 403])
def test_other_client_errors_are_permanent_without_a_report(
    sandbox: tuple[str, MessageStore, FaultInjector], status: int
) -> None:
    """The sandbox's injected 400 is an INVALID_ARGUMENT that does not say the token is at fault
    (a bad payload answers the same code); 403 SENDER_ID_MISMATCH is about this project, and a
    secondary project may well accept the token."""
    url, _, faults = sandbox
    faults.set_fault(Fault(endpoint="fcm", status=status, fail_next=1))
    reported: list[tuple[uuid.UUID, str, str]] = []
    provider = _provider(url, on_invalid_token=lambda *report: reported.append(report))
    with pytest.raises(
        PermanentProviderError, match=rf"FCM {status} \((INVALID_ARGUMENT|SENDER_ID_MISMATCH)\)"
    ):
        provider.send(_claim())
    assert reported == []


# The two error answers of FCM's documentation (firebase.google.com/docs/cloud-messaging/error-codes),
# and a field violation that names the token.
_BAD_DATA = {
    "code": 400,
    "message": "Invalid value at 'message.data[0].value' (TYPE_STRING), 12",
    "status": "INVALID_ARGUMENT",
    "details": [
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [
                {
                    "field": "message.data[0].value",
                    "description": "Invalid value at 'message.data[0].value' (TYPE_STRING), 12",
                }
            ],
        }
    ],
}
_BAD_TOKEN = {
    "code": 400,
    "message": "The registration token is not a valid FCM registration token",
    "status": "INVALID_ARGUMENT",
    "details": [
        {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "INVALID_ARGUMENT"}
    ],
}
_BAD_TOKEN_FIELD = {
    "code": 400,
    "message": "Invalid value at 'message.token'",
    "status": "INVALID_ARGUMENT",
    "details": [
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": "message.token", "description": "Invalid registration token"}],
        }
    ],
}


@pytest.mark.parametrize(
    ("error", "dead_token"), [(_BAD_DATA, False), (_BAD_TOKEN, True), (_BAD_TOKEN_FIELD, True)]
)
def test_an_invalid_argument_marks_the_token_only_when_fcm_says_the_token_is_invalid(
    error: dict[str, Any], dead_token: bool
) -> None:
    refusal = classify_refusal(Answer(400, httpx.Headers(), json.dumps({"error": error}).encode()))
    assert isinstance(refusal, PermanentProviderError)
    assert isinstance(refusal, InvalidToken) is dead_token


def test_a_refused_access_token_is_permanent(sandbox: tuple[str, MessageStore, FaultInjector]) -> None:
    url, _, faults = sandbox
    faults.set_fault(Fault(endpoint="fcm", status=401, fail_next=1))
    with pytest.raises(PermanentProviderError, match=r"FCM 401 \(UNAUTHENTICATED\)"):
        _provider(url).send(_claim())


def test_timeouts_and_refused_connections_are_transient(
    sandbox: tuple[str, MessageStore, FaultInjector],
) -> None:
    url, _, faults = sandbox
    faults.set_fault(Fault(endpoint="fcm", status=503, rate=0.0, latency_ms=1000))
    with pytest.raises(TransientProviderError, match="Timeout"):
        _provider(url, timeout_seconds=0.2).send(_claim())
    with pytest.raises(TransientProviderError, match="ConnectError"):
        _provider(f"http://{HOST}:{free_port()}").send(_claim())


@pytest.mark.timeout(10)  # without a deadline, the answer takes 24 s
def test_an_answer_dripped_a_byte_at_a_time_ends_at_the_deadline(raw_server: RawServer) -> None:
    provider = _provider(raw_server(SLOW_HEAD, 1, 0.1), timeout_seconds=2, deadline_seconds=0.5)
    assert_cut_at_half_a_second(lambda: provider.send(_claim()))


def test_a_huge_answer_is_not_read_into_memory(raw_server: RawServer) -> None:
    provider = _provider(raw_server(huge_answer(), 65536, 0))
    assert_read_in_little_memory(lambda: provider.send(_claim()), "FCM 503")
