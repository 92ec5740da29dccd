"""The Python client (clients/python, `pulse_client`) against the real running gateway and workers:
sends and their delivery, idempotent replays, problem details as exceptions, cursor iteration, the
async client, retries that honour Retry-After, webhook signature verification, every resource once
(topics and fan-outs, digests, API keys and the audit log, end-user tokens and the inbox, presence),
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
    DigestSpec,
    FanoutOut,
    FanoutStatus,
    InboxStatus,
    NotificationDetail,
    NotificationRequest,
    Scope,
    Status,
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


def test_a_topic_send_fans_out_to_its_subscribers_and_is_followed_to_the_end(pulse: Pulse) -> None:
    key, ada, bob = (
        f"client.{uuid.uuid4().hex[:8]}",
        f"ada-{uuid.uuid4().hex[:8]}",
        f"bob-{uuid.uuid4().hex[:8]}",
    )
    pulse.recipients.put(ada, {"email": _address()})  # bob has no profile: skipped, no address
    assert pulse.topics.subscribe(key, [ada, bob]).added == 2
    assert (pulse.topics.subscribe(key, [bob]).added, pulse.topics.get(key).subscribers) == (0, 2)
    assert [subscriber.user_id for subscriber in pulse.topics.iter_subscribers(key, limit=1)] == [ada, bob]

    topic_send = {"channel": "email", "topic": key, "content": {"subject": "Shipped", "body": "On its way"}}
    with pytest.raises(ValueError, match="send_to_topic"):
        pulse.notifications.send(topic_send)  # refused before sending: its answer is not a notification
    accepted = pulse.notifications.send_to_topic(topic_send)
    assert (accepted.topic, accepted.recipients) == (key, 2)

    def finished() -> FanoutOut | None:
        fanout = pulse.fanouts.get(accepted.fanout_id)
        return fanout if fanout.status is FanoutStatus.DONE else None

    fanout: FanoutOut = wait_until(finished, what="the fan-out to be done")
    assert (fanout.created, fanout.skipped, fanout.skipped_reasons) == (1, 1, {"no_address": 1})
    [notification] = pulse.notifications.list(user_id=ada).items
    assert notification.content.subject == "Shipped"
    with pytest.raises(ConflictError):
        pulse.fanouts.cancel(accepted.fanout_id)

    assert pulse.topics.unsubscribe(key, [ada, bob, "nobody"]).removed == 2
    with pytest.raises(NotFoundError):
        pulse.topics.get(key)  # a topic exists while it has subscribers


def test_digested_sends_are_collected_into_one_notification(pulse: Pulse) -> None:
    name, user_id = f"comments-{uuid.uuid4().hex[:8]}", f"u-{uuid.uuid4().hex[:8]}"
    pulse.templates.create(
        {
            "name": name,
            "channel": "email",
            "subject": "{{ count }} new comments",
            "body": "{% for e in events %}{{ e.author }}\n{% endfor %}",
            "variables": ["events", "count"],
        }
    )

    def comment(author: str) -> NotificationRequest:
        return NotificationRequest(
            channel=Channel.EMAIL,
            recipient=_address(),
            user_id=user_id,
            template=name,
            variables={"author": author},
            digest=DigestSpec(key="post-42", window_seconds=600),
        )

    first = pulse.notifications.send_digest(comment("Bob"))
    second = pulse.notifications.send_digest(comment("Eve"))
    assert (first.digest_id, first.event_count, second.event_count) == (second.digest_id, 1, 2)
    assert pulse.notifications.get(first.digest_id).status is Status.SCHEDULED
    with pytest.raises(ValueError, match="send_digest"):
        pulse.notifications.send(comment("Ann"))

    pulse.notifications.force(first.digest_id)  # closes the window now
    sent = _wait_for(pulse, first.digest_id, Status.DELIVERED)
    assert sent.content.subject == "2 new comments" and sent.content.body == "Bob\nEve\n"


def test_an_api_key_is_created_listed_revoked_and_audited(stack: Stack, pulse: Pulse) -> None:
    created = pulse.api_keys.create({"scopes": ["read"], "name": "client test"})
    assert (created.scopes, created.key[:10]) == ([Scope.READ], created.prefix)
    with Pulse(created.key, base_url=stack.api_url) as reader:
        reader.notifications.list(limit=1)  # it works
        assert created.id in [key.id for key in pulse.api_keys.iter(limit=1)]  # every page

        pulse.api_keys.revoke(created.id)
        [listed] = [key for key in pulse.api_keys.list(limit=200).items if key.id == created.id]
        assert listed.revoked_at is not None

        def refused() -> bool:
            try:
                reader.notifications.list(limit=1)
            except AuthenticationError:
                return True
            return False

        wait_until(refused, what="the revoked key to be refused")  # within PULSE_AUTH_CACHE_SECONDS

    entries = list(pulse.audit_log.iter(object_type="api_key", object_id=created.id, limit=1))
    assert [entry.action for entry in entries] == ["api_key.revoke", "api_key.create"]
    assert pulse.audit_log.list(action="api_key.revoke", limit=1).items[0].object_id == str(created.id)


def test_an_end_user_reads_their_inbox_with_their_token(stack: Stack, pulse: Pulse) -> None:
    user_id = f"ada-{uuid.uuid4().hex[:8]}"
    token = pulse.auth.token(user_id, ttl_seconds=600)
    sent = pulse.notifications.send(
        {"channel": "inapp", "recipient": user_id, "content": {"subject": "Export ready", "body": "March"}}
    )
    _wait_for(pulse, sent.id, Status.DELIVERED)

    with Pulse(token=token.token, base_url=stack.api_url) as ada:
        page = ada.inbox.list(status=InboxStatus.UNREAD)
        assert ([item.id for item in page.items], page.unread_count, ada.inbox.unread_count()) == (
            [sent.id],
            1,
            1,
        )
        read = ada.inbox.mark_read(sent.id)
        assert (read.status, read.subject) == (Status.READ, "Export ready") and read.read_at is not None
        assert (ada.inbox.unread_count(), ada.inbox.mark_all_read().updated) == (0, 0)
        with pytest.raises(NotFoundError):
            ada.inbox.mark_read(uuid.uuid4())
        with pytest.raises(AuthenticationError):
            ada.notifications.list()  # a token reads its user's inbox and nothing else
    with pytest.raises(AuthenticationError):
        pulse.inbox.list()  # nor does an API key read an inbox
    assert pulse.notifications.get(sent.id).status is Status.READ

    async def read_asynchronously() -> list[uuid.UUID]:
        async with AsyncPulse(token=token.token, base_url=stack.api_url) as user:
            return [item.id async for item in user.inbox.iter(status=InboxStatus.READ, limit=1)]

    assert asyncio.run(read_asynchronously()) == [sent.id]


def test_a_user_who_never_connected_is_offline(pulse: Pulse) -> None:
    presence = pulse.presence.get(f"ada/{uuid.uuid4().hex[:8]}")
    assert (presence.online, presence.connections, presence.last_seen_at) == (False, 0, None)


def test_a_client_takes_an_api_key_or_a_token() -> None:
    with pytest.raises(ValueError, match="not both"):
        Pulse()
    with pytest.raises(ValueError, match="not both"):
        Pulse("pk_test", token="eyJ")


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
