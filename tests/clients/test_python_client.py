"""The Python client (clients/python, `pulse_client`) against the real running gateway and workers:
sends and their delivery, idempotent replays, problem details as exceptions, cursor iteration, the
async client, retries that honour Retry-After, webhook signature verification, every resource once,
and models that match the gateway's current OpenAPI."""

import asyncio
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from devtools.stack import Stack, free_port
from pulse.db import transaction
from pulse.tenants.service import configure_tenant
from pulse_client import (
    AsyncPulse,
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    Pulse,
    RetryPolicy,
    WebhookVerificationError,
    verify_webhook,
)
from pulse_client.models import (
    BatchMode,
    Channel,
    Content,
    DigestedSend,
    NotificationDetail,
    NotificationRequest,
    Status,
    TopicSendAccepted,
)
from tests.conftest import Tenant, wait_until

GENERATE = Path(__file__).parents[2] / "clients" / "python" / "generate.py"


@pytest.fixture
def pulse(stack: Stack, tenant: Tenant) -> Iterator[Pulse]:
    with Pulse(tenant.api_key, base_url=stack.api_url) as client:
        yield client


def _email(recipient: str, subject: str = "Welcome", **fields: object) -> NotificationRequest:
    return NotificationRequest(
        channel=Channel.EMAIL, recipient=recipient, content=Content(subject=subject, body="Hello"), **fields
    )


def _address() -> str:
    return f"client-{uuid.uuid4().hex[:8]}@example.com"


def _wait_for(pulse: Pulse, notification_id: uuid.UUID, status: Status) -> NotificationDetail:
    def reached() -> NotificationDetail | None:
        notification = pulse.notifications.get(notification_id)
        return notification if notification.status is status else None

    found: NotificationDetail = wait_until(reached, what=f"{notification_id} to be {status}")
    return found


def test_a_send_through_the_client_is_delivered(stack: Stack, pulse: Pulse) -> None:
    recipient = _address()
    sent = pulse.notifications.send(_email(recipient, metadata={"order": "A-1001"}))
    assert (sent.status, sent.recipient, sent.metadata) == (Status.QUEUED, recipient, {"order": "A-1001"})

    delivered = _wait_for(pulse, sent.id, Status.DELIVERED)
    assert [attempt.outcome for attempt in delivered.attempts] == ["delivered"]
    with stack.sandbox() as sandbox:
        [message] = sandbox.get("/api/messages", params={"recipient": recipient}).json()["items"]
    assert message["subject"] == "Welcome"


def test_a_repeated_idempotency_key_returns_the_original_and_another_body_is_a_conflict(pulse: Pulse) -> None:
    recipient, key = _address(), f"order-{uuid.uuid4()}"
    first = pulse.notifications.send(_email(recipient), idempotency_key=key)
    again = pulse.notifications.send(_email(recipient), idempotency_key=key)
    assert again.id == first.id

    with pytest.raises(ConflictError) as refused:
        pulse.notifications.send(_email(recipient, subject="Another"), idempotency_key=key)
    assert refused.value.status == 409
    # Without a key of the caller's, each send gets a fresh one: two sends, two notifications.
    assert pulse.notifications.send(_email(recipient)).id != pulse.notifications.send(_email(recipient)).id


def test_digest_and_topic_sends_return_their_own_answers(stack: Stack, tenant: Tenant, pulse: Pulse) -> None:
    run = uuid.uuid4().hex[:8]
    pulse.templates.create(
        {"name": f"inbox-{run}", "channel": "inapp", "body": "{{ count }} new", "variables": ["count"]}
    )
    digested = pulse.notifications.send(
        {
            "channel": "inapp",
            "user_id": f"ada-{run}",
            "template": f"inbox-{run}",
            "digest": {"key": "comments", "window_seconds": 600},
        }
    )
    assert isinstance(digested, DigestedSend) and digested.event_count == 1

    with stack.client(tenant.api_key) as http:  # The client has no topics resource (yet).
        http.put(f"/v1/topics/news-{run}/subscribers", json={"user_ids": [f"ada-{run}", f"bob-{run}"]})
    # Without an Idempotency-Key, which topic sends do not take (and so without retries).
    fanned_out = pulse.notifications.send(
        {"channel": "inapp", "topic": f"news-{run}", "content": {"body": "Hello"}}
    )
    assert isinstance(fanned_out, TopicSendAccepted) and fanned_out.recipients == 2


def test_invalid_input_raises_an_error_naming_the_field(pulse: Pulse) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        pulse.notifications.send(
            {"channel": "email", "recipient": "ada@", "content": {"subject": "Hi", "body": "x"}}
        )
    error = refused.value
    assert (error.status, error.title) == (422, "Unprocessable Entity")
    assert error.fields == ["recipient"]
    assert error.errors[0].loc == ("body", "recipient")
    assert "email address" in error.errors[0].msg


def test_errors_map_to_their_exceptions(
    stack: Stack, make_tenant: Callable[..., Tenant], pulse: Pulse
) -> None:
    with pytest.raises(NotFoundError) as missing:
        pulse.notifications.get(uuid.uuid4())
    assert missing.value.status == 404
    with Pulse("pk_not-a-key", base_url=stack.api_url) as stranger, pytest.raises(AuthenticationError):
        stranger.notifications.list()
    reader = make_tenant(scopes="read")
    with (
        Pulse(reader.api_key, base_url=stack.api_url) as client,
        pytest.raises(PermissionDeniedError) as denied,
    ):
        client.notifications.send(_email(_address()))
    assert "send" in str(denied.value.detail)


def test_iteration_follows_the_cursor_across_pages(pulse: Pulse) -> None:
    user_id = f"u-{uuid.uuid4().hex[:8]}"
    sent = [pulse.notifications.send(_email(_address(), user_id=user_id)).id for _ in range(5)]

    first = pulse.notifications.list(user_id=user_id, limit=2)
    assert len(first.items) == 2 and first.next_cursor is not None
    seen = [notification.id for notification in pulse.notifications.iter(user_id=user_id, limit=2)]
    assert seen == sent[::-1]  # newest first, every page


def test_the_async_client_sends_reads_iterates_and_raises(stack: Stack, tenant: Tenant) -> None:
    user_id = f"u-{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        async with AsyncPulse(tenant.api_key, base_url=stack.api_url) as pulse:
            sent = await asyncio.gather(
                *(pulse.notifications.send(_email(_address(), user_id=user_id)) for _ in range(3))
            )
            read = await pulse.notifications.get(sent[0].id)
            assert read.id == sent[0].id
            listed = [
                notification.id async for notification in pulse.notifications.iter(user_id=user_id, limit=2)
            ]
            assert sorted(listed) == sorted(notification.id for notification in sent)
            with pytest.raises(InvalidRequestError) as refused:
                await pulse.notifications.send(
                    {"channel": "sms", "recipient": "+1415", "content": {"body": "Hi"}}
                )
            assert refused.value.fields == ["recipient"]

    asyncio.run(scenario())


def test_a_rate_limited_send_waits_for_retry_after_and_then_succeeds(
    stack: Stack,
    make_tenant: Callable[..., Tenant],
    session_factory: sessionmaker[Session],
    caplog: pytest.LogCaptureFixture,
) -> None:
    window = 3
    limited = make_tenant()
    with transaction(session_factory) as session:
        configure_tenant(session, name=limited.name, rate_limit="1", rate_limit_window_seconds=window)
    recipient = _address()
    with Pulse(limited.api_key, base_url=stack.api_url) as pulse:
        # Windows are aligned to the epoch (on PostgreSQL's clock, this machine's): start early in one,
        # so that the second send meets the limit rather than the next window.
        wait_until(lambda: time.time() % window < 1, timeout=window + 1, what="the start of a window")
        pulse.notifications.send(_email(recipient))
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="pulse_client"):
            second = pulse.notifications.send(_email(recipient))
        waited = time.monotonic() - started
    assert second.status is Status.QUEUED
    retries = [record for record in caplog.records if getattr(record, "pulse_status", None) == 429]
    assert retries, "the second send should have met the rate limit and retried"
    # It slept what Retry-After said (to the window's end, at least a second) before sending again.
    waits = [getattr(record, "pulse_wait", 0) for record in retries]
    assert all(wait >= 1 for wait in waits)
    assert waited >= sum(waits)


def test_the_webhook_helper_verifies_a_real_signed_delivery(stack: Stack, pulse: Pulse) -> None:
    secret = pulse.webhook_secret.get().secret
    path = f"/webhooks/client/{uuid.uuid4().hex[:8]}"
    content = Content(subject="Shipped", body="Order A-1001 shipped", data={"order": "A-1001"})
    sent = pulse.notifications.send(
        NotificationRequest(channel=Channel.WEBHOOK, recipient=stack.sandbox_url + path, content=content)
    )
    _wait_for(pulse, sent.id, Status.DELIVERED)
    with stack.sandbox() as sandbox:
        [message] = sandbox.get("/api/messages", params={"channel": "webhook", "recipient": path}).json()[
            "items"
        ]

    event = verify_webhook(secret, message["body"], message["headers"])
    assert (event["id"], event["data"]["body"]) == (str(sent.id), "Order A-1001 shipped")
    with pytest.raises(WebhookVerificationError):
        verify_webhook(secret, message["body"].replace("A-1001", "A-9999"), message["headers"])
    with pytest.raises(WebhookVerificationError):
        verify_webhook(pulse.webhook_secret.rotate().secret, message["body"], message["headers"])


def test_every_resource_round_trips_through_its_models(pulse: Pulse) -> None:
    name = f"welcome-{uuid.uuid4().hex[:8]}"
    template = pulse.templates.create(
        {
            "name": name,
            "channel": "email",
            "subject": "Hi {{ first }}",
            "body": "Hello {{ first }}",
            "variables": ["first"],
        }
    )
    assert template.version == 1
    assert pulse.templates.preview(name, {"first": "Ada"}).subject == "Hi Ada"
    with pytest.raises(InvalidRequestError) as missing:
        pulse.templates.preview(name, {})
    assert missing.value.fields == ["variables"]
    replaced = pulse.templates.replace(
        name, {"channel": "email", "subject": "Hey {{ first }}", "body": "Yo", "variables": ["first"]}
    )
    assert (replaced.version, pulse.templates.get(name).subject) == (2, "Hey {{ first }}")
    assert name in [item.name for item in pulse.templates.list(channel=Channel.EMAIL, size=200).items]

    user_id = f"ada/{uuid.uuid4().hex[:8]}"  # a `/` in a user id is one path segment
    profile = pulse.recipients.put(user_id, {"email": "Ada@Example.COM", "timezone": "Europe/Paris"})
    assert (profile.email, pulse.recipients.get(user_id).timezone) == ("Ada@example.com", "Europe/Paris")
    from_template = pulse.notifications.send(
        {"channel": "email", "user_id": user_id, "template": name, "variables": {"first": "Ada"}}
    )
    assert (from_template.recipient, from_template.content.subject) == ("Ada@example.com", "Hey Ada")
    pulse.recipients.delete(user_id)
    with pytest.raises(NotFoundError):
        pulse.recipients.get(user_id)
    pulse.templates.delete(name)

    schedule = pulse.schedules.create(
        {
            "cron": "0 9 * * MON",
            "timezone": "Europe/Paris",
            "notification": _email(_address()).model_dump(mode="json", exclude_none=True),
        }
    )
    assert pulse.schedules.pause(schedule.id).paused
    assert not pulse.schedules.resume(schedule.id).paused
    assert schedule.id in [item.id for item in pulse.schedules.iter(limit=1)]
    assert pulse.schedules.get(schedule.id, history=5).history == []
    pulse.schedules.delete(schedule.id)

    scheduled = pulse.notifications.send(_email(_address(), send_at=datetime(2090, 1, 1, 9, tzinfo=UTC)))
    assert pulse.notifications.cancel(scheduled.id).status is Status.CANCELLED
    with pytest.raises(ConflictError):
        pulse.notifications.force(scheduled.id)

    batch = pulse.notifications.send_batch(
        [_email(_address()), {"channel": "sms", "recipient": "+1415", "content": {"body": "Hi"}}],
        mode=BatchMode.BEST_EFFORT,
    )
    assert (batch.accepted, batch.refused) == (1, 1)
    assert batch.results[1].error is not None and batch.results[1].error.status == 422

    assert pulse.dead_letters.list(channel=Channel.EMAIL).items == []
    assert pulse.dead_letters.replay_all(Channel.EMAIL).replayed == 0
    summary = pulse.analytics.summary()
    assert summary.model_dump()  # parsed into its model


def test_the_checked_in_models_match_the_gateways_openapi(stack: Stack) -> None:
    """Drift fails here: after an API change, run clients/python/generate.py and commit models.py."""
    result = subprocess.run(
        [sys.executable, str(GENERATE), "--check", "--url", f"{stack.api_url}/openapi.json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_a_send_is_retried_with_its_idempotency_key_when_the_gateway_cannot_be_reached() -> None:
    """A refused connection is retried, every attempt with the same key; then the error is raised."""
    keys: list[str] = []

    def record(request: httpx.Request) -> None:
        keys.append(request.headers["Idempotency-Key"])

    # Nothing listens on a free port: each attempt is refused.
    http = httpx.Client(base_url=f"http://127.0.0.1:{free_port()}", event_hooks={"request": [record]})
    retry = RetryPolicy(attempts=3, backoff=0.05)
    with http, Pulse("pk_test", http_client=http, retry=retry) as pulse, pytest.raises(httpx.ConnectError):
        pulse.notifications.send(_email(_address()))
    assert len(keys) == 3 and len(set(keys)) == 1
