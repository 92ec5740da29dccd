"""End to end: a provider account's send-rate limit holds across worker processes, and a provider's
"too many" pauses it without using the notifications' attempts. Two email workers (processes, as
replicas would run) share a 5/s SMTP limit; the sms worker's Twilio account is limited too."""

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import create_engine, text

from devtools.stack import Infrastructure, Stack, metric_value, running_stack
from pulse.tenants.service import Scope
from tests.conftest import wait_for_status, wait_until

WORKERS = ["email_worker", "email_worker_2"]
SMTP_RATE, SMTP_BURST = 5, 5
EMAILS = 40
JITTER = 0.5  # Seconds.
WAITED = 'pulse_provider_rate_wait_seconds_count{provider="smtp"}'


@pytest.fixture(scope="module")
def limited(private: Infrastructure, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        "PULSE_SMTP_RATE_LIMIT": f"{SMTP_RATE}/s,burst={SMTP_BURST}",
        "PULSE_TWILIO_RATE_LIMIT": "50/s",
        # A short lease: waiting for tokens must stay within it (else the scheduler would write the
        # claims off as lost attempts, which the tests would see).
        "PULSE_EMAIL_WORKER_CLAIM_LEASE_SECONDS": "4",
        "PULSE_SMS_WORKER_CLAIM_LEASE_SECONDS": "4",
        "PULSE_SCHEDULER_TICK_SECONDS": "0.2",
        "PULSE_RATE_LIMIT": "100000",
    }
    services = ("sandbox", "api", "email_worker", "sms_worker", "scheduler")
    with running_stack(private, tmp_path_factory.mktemp("send-rates"), env, services=services) as stack:
        stack.start_replica("email_worker", "email_worker_2")
        yield stack


@pytest.fixture(scope="module")
def client(limited: Stack, private: Infrastructure) -> Iterator[httpx.Client]:
    key = private.create_tenant_with_key("send-rates", Scope.SEND, Scope.READ)
    with limited.client(key) as client:
        yield client


@pytest.fixture
def sandbox(limited: Stack) -> Iterator[httpx.Client]:
    with limited.sandbox() as client:
        yield client
        client.delete("/api/faults")
        client.delete("/api/messages")


def _attempt_counts(private: Infrastructure, ids: list[str]) -> dict[str, tuple[str, int]]:
    engine = create_engine(private.database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT id::text, status, attempt_count FROM notifications WHERE id::text = ANY(:ids)"),
                {"ids": ids},
            )
            return {row.id: (row.status, row.attempt_count) for row in rows}
    finally:
        engine.dispose()


def test_two_email_workers_together_stay_within_the_account_s_rate(
    limited: Stack, client: httpx.Client, sandbox: httpx.Client, private: Infrastructure
) -> None:
    run = uuid.uuid4().hex[:8]
    emails = [
        {
            "channel": "email",
            "recipient": f"rate-{run}-{i}@example.com",
            "content": {"subject": f"#{i}", "body": "b"},
        }
        for i in range(EMAILS)
    ]
    response = client.post("/v1/notifications/batch", json={"notifications": emails})
    assert response.status_code == 202, response.text
    ids = [result["id"] for result in response.json()["results"]]

    def arrived() -> list[dict] | None:
        items: list[dict] = sandbox.get("/api/messages", params={"channel": "email", "limit": 1000}).json()[
            "items"
        ]
        return items if len(items) >= EMAILS else None

    items = wait_until(arrived, timeout=120, what=f"{EMAILS} emails at the sandbox")
    assert sandbox.get("/api/stats").json()["repeats"] == 0

    # Any one second holds at most the rate's second plus the burst. The sandbox sees each mail a few
    # milliseconds after its token's time, not always the same few: up to JITTER is allowed for.
    # (Each worker on a bucket of its own would show about 2 x 5 + 2 x 5 = 20.)
    times = sorted(datetime.fromisoformat(item["received_at"]) for item in items)
    busiest = max(sum(start <= t < start + timedelta(seconds=1) for t in times) for start in times)
    assert busiest <= SMTP_RATE * (1 + JITTER) + SMTP_BURST, f"{busiest} emails within one second"
    assert times[-1] - times[0] >= timedelta(seconds=(EMAILS - SMTP_BURST) / SMTP_RATE - 1)

    # Everything delivered with one attempt: the waits used none.
    def all_delivered() -> dict[str, tuple[str, int]] | None:
        counts = _attempt_counts(private, ids)
        return counts if all(status == "delivered" for status, _ in counts.values()) else None

    counts = wait_until(all_delivered, timeout=30, what="every notification delivered")
    assert sorted(counts.values()) == [("delivered", 1)] * EMAILS
    waited = {worker: metric_value(limited.metrics_url(worker), WAITED) for worker in WORKERS}
    assert sum(waited.values()) >= EMAILS, waited
    print(f"\nbusiest second: {busiest}; span {times[-1] - times[0]}; sends per worker {waited}")


def test_a_relay_saying_slow_down_pauses_the_sends_without_using_attempts(
    limited: Stack, client: httpx.Client, sandbox: httpx.Client
) -> None:
    sandbox.post("/api/faults", json={"endpoint": "smtp", "status": 429, "fail_next": 1}).raise_for_status()
    body = {"channel": "email", "recipient": "slow@example.com", "content": {"subject": "s", "body": "b"}}
    notification_id = client.post("/v1/notifications", json=body).json()["id"]

    delivered = wait_for_status(client, notification_id, "delivered", timeout=60)

    assert delivered["attempt_count"] == 1
    assert [attempt["outcome"] for attempt in delivered["attempts"]] == ["delivered"]
    throttled = 'pulse_provider_throttled_total{provider="smtp"}'
    assert sum(metric_value(limited.metrics_url(worker), throttled) for worker in WORKERS) == 1


def test_a_429_with_retry_after_is_waited_out_without_using_an_attempt(
    limited: Stack, client: httpx.Client, sandbox: httpx.Client
) -> None:
    fault = {"endpoint": "twilio", "status": 429, "fail_next": 1, "retry_after": 3}
    sandbox.post("/api/faults", json=fault).raise_for_status()
    sent_at = datetime.now().astimezone()
    body = {"channel": "sms", "recipient": "+14155550123", "content": {"body": "Your code is 123456"}}
    notification_id = client.post("/v1/notifications", json=body).json()["id"]

    delivered = wait_for_status(client, notification_id, "delivered", timeout=60)

    assert delivered["attempt_count"] == 1
    assert [attempt["outcome"] for attempt in delivered["attempts"]] == ["delivered"]
    [message] = sandbox.get("/api/messages", params={"channel": "sms"}).json()["items"]
    # Refused first, then sent again only once the Retry-After had passed.
    assert datetime.fromisoformat(message["received_at"]) >= sent_at + timedelta(seconds=3)
    throttled = 'pulse_provider_throttled_total{provider="twilio"}'
    assert metric_value(limited.metrics_url("sms_worker"), throttled) == 1
