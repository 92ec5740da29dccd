"""A request id travels from the HTTP request, through RabbitMQ, into the worker's JSON log lines."""

import json
import uuid
from pathlib import Path
from typing import Any

from devtools.stack import Stack
from tests.conftest import Tenant, wait_until


def _log_events(path: Path) -> list[dict[str, Any]]:
    events = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


def test_the_request_id_is_echoed_and_reaches_the_worker_s_log_lines(stack: Stack, tenant: Tenant) -> None:
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    with stack.client(tenant.api_key) as client:
        response = client.post(
            "/v1/notifications",
            json={
                "channel": "email",
                "recipient": "ada@example.com",
                "content": {"subject": "s", "body": "b"},
            },
            headers={"X-Request-ID": request_id},
        )
        notification_id = response.json()["id"]

    assert response.headers["X-Request-ID"] == request_id

    def delivered_line() -> dict[str, Any] | None:
        for event in _log_events(stack.log_dir / "email_worker.log"):
            if event.get("notification_id") == notification_id and event["message"] == "delivered":
                return event
        return None

    event = wait_until(delivered_line, what="the worker's log line for the notification")
    assert event["request_id"] == request_id
    assert (event["service"], event["channel"], event["tenant"]) == ("email-worker", "email", str(tenant.id))
    assert event["level"] == "info"


def test_a_request_without_an_id_gets_one(stack: Stack) -> None:
    with stack.client("no key") as client:
        response = client.get("/healthz")
        other = client.get("/healthz")

    generated = response.headers["X-Request-ID"]
    assert len(generated) == 32 and int(generated, 16) >= 0
    assert other.headers["X-Request-ID"] != generated


def test_every_service_logs_json_lines(stack: Stack) -> None:
    for service in ("api", "email_worker", "scheduler", "sandbox"):
        lines = [line for line in (stack.log_dir / f"{service}.log").read_text().splitlines() if line.strip()]
        assert lines, service
        events = [json.loads(line) for line in lines]  # Fails on any line that is not JSON.
        assert {event["service"] for event in events} == {service.replace("_", "-")}
