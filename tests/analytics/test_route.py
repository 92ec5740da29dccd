"""GET /v1/analytics/summary through the gateway in-process, on a private database and vhost."""

import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from kombu import Connection, Exchange, Producer
from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from devtools.stack import Infrastructure
from pulse.db import transaction
from pulse.db.models import notifications_table
from pulse.messaging.depths import queue_names
from pulse.settings import BrokerSettings, DatabaseSettings
from pulse.tenants.service import Scope, create_api_key, create_tenant
from services.api.main import create_app
from services.api.settings import ApiSettings
from tests.conftest import wait_until

SUMMARY = "/v1/analytics/summary"
DEAD_BROKER = "amqp://guest:guest@127.0.0.1:1//"
PROBE_QUEUE = "pulse.webhook.low"


@dataclass(frozen=True)
class Key:
    tenant_id: uuid.UUID
    headers: dict[str, str]


def _key(factory: sessionmaker[Session], scopes: str = "read") -> Key:
    name = f"analytics-{secrets.token_hex(4)}"
    with transaction(factory) as session:
        tenant = create_tenant(session, name=name)
        key = create_api_key(session, tenant_name=name, scopes=[Scope(s) for s in scopes.split(",")])
    return Key(tenant_id=tenant.id, headers={"Authorization": f"Bearer {key}"})


def _client(private: Infrastructure, broker: BrokerSettings) -> TestClient:
    settings = ApiSettings(database=DatabaseSettings(url=private.database_url), broker=broker)
    return TestClient(create_app(settings), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(private: Infrastructure) -> Iterator[TestClient]:
    with _client(private, BrokerSettings(url=private.broker_url)) as client:
        yield client


def _insert(factory: sessionmaker[Session], tenant_id: uuid.UUID, **fields: Any) -> None:
    values = {
        "id": uuid.uuid4(),
        "tenant_id": tenant_id,
        "channel": "email",
        "priority": "normal",
        "recipient": "ada@example.com",
        "content": {"subject": "s", "body": "b"},
        **fields,
    }
    values.setdefault(
        "updated_at", values.get("delivered_at") or values.get("failed_at") or values["created_at"]
    )
    with transaction(factory) as session:
        session.execute(insert(notifications_table).values(values))


def _assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def test_the_summary_has_the_documented_shape(
    client: TestClient, factory: sessionmaker[Session], private: Infrastructure
) -> None:
    reader, other = _key(factory), _key(factory)
    now = datetime.now(UTC)
    created = now - timedelta(minutes=5)
    _insert(
        factory,
        reader.tenant_id,
        status="delivered",
        created_at=created,
        delivered_at=created + timedelta(seconds=2),
        attempt_count=1,
    )
    _insert(
        factory,
        reader.tenant_id,
        status="failed",
        created_at=created,
        failed_at=created + timedelta(seconds=3),
        attempt_count=3,
        last_error="550 no such user",
    )
    _insert(factory, other.tenant_id, channel="sms", status="queued", created_at=created)
    with Connection(private.broker_url) as connection:
        Producer(connection).publish(
            {"probe": True}, exchange=Exchange(""), routing_key=PROBE_QUEUE, serializer="json"
        )
    try:
        wait_until(
            lambda: client.get(SUMMARY, headers=reader.headers).json()["queues"][PROBE_QUEUE] == 1,
            timeout=10,
            what=f"one message counted in {PROBE_QUEUE}",
        )
        response = client.get(SUMMARY, headers=reader.headers)
    finally:
        with Connection(private.broker_url) as connection:
            connection.default_channel.queue_purge(PROBE_QUEUE)

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"since", "until", "channels", "throughput", "queues"}
    since = datetime.fromisoformat(body["since"])
    until = datetime.fromisoformat(body["until"])
    assert body["since"].endswith("Z") and body["until"].endswith("Z")
    assert until - since == timedelta(hours=24)
    assert now <= until <= datetime.now(UTC)

    assert body["channels"] == {
        "email": {
            "total": 2,
            "by_status": {"delivered": 1, "failed": 1},
            "delivery_rate": 0.5,
            "avg_delivery_seconds": pytest.approx(2.0),
            "p95_delivery_seconds": pytest.approx(2.0),
            "avg_attempts": 2.0,
            "retried": 1,
            "read": 0,
            "read_rate": None,
            "top_failure_reasons": [{"reason": "550 no such user", "count": 1}],
        }
    }

    throughput = body["throughput"]
    assert len(throughput) == 60
    assert all(set(m) == {"minute", "accepted", "delivered", "failed"} for m in throughput)
    assert all(m["minute"].endswith(":00Z") for m in throughput)
    minutes = [datetime.fromisoformat(m["minute"]) for m in throughput]
    assert minutes == sorted(minutes)
    assert minutes[-1] == until.replace(second=0, microsecond=0)
    assert sum(m["accepted"] for m in throughput) == 2
    assert sum(m["delivered"] for m in throughput) == 1
    assert sum(m["failed"] for m in throughput) == 1

    queues = body["queues"]
    assert set(queues) == set(queue_names())
    assert all(name.startswith("pulse.") and isinstance(depth, int) for name, depth in queues.items())
    assert {"pulse.email.normal", "pulse.sms.critical", "pulse.email.dead"} <= set(queues)
    assert queues[PROBE_QUEUE] == 1


def test_since_and_until_choose_the_window(client: TestClient, factory: sessionmaker[Session]) -> None:
    reader = _key(factory)
    for hour in (1, 2, 3):
        _insert(
            factory,
            reader.tenant_id,
            status="queued",
            created_at=datetime(2026, 1, 15, hour, 30, tzinfo=UTC),
        )

    response = client.get(
        SUMMARY,
        params={"since": "2026-01-15T02:00:00", "until": "2026-01-15T04:30:00+01:00"},
        headers=reader.headers,
    )

    assert response.status_code == 200, response.text
    body = response.json()
    # Naive is UTC; an offset is converted.
    assert (body["since"], body["until"]) == ("2026-01-15T02:00:00Z", "2026-01-15T03:30:00Z")
    assert body["channels"]["email"]["total"] == 1
    assert body["throughput"][0]["minute"] == "2026-01-15T02:30:00Z"
    assert body["throughput"][0]["accepted"] == 1
    assert body["throughput"][-1]["minute"] == "2026-01-15T03:29:00Z"


def test_without_a_key_401_and_without_the_read_scope_403(
    client: TestClient, factory: sessionmaker[Session]
) -> None:
    _assert_problem(client.get(SUMMARY), 401)
    sender = _key(factory, scopes="send,admin")
    _assert_problem(client.get(SUMMARY, headers=sender.headers), 403)


@pytest.mark.parametrize(
    "params",
    [
        {"since": "2026-01-15T02:00:00Z", "until": "2026-01-15T01:00:00Z"},
        {"since": "2025-12-01T00:00:00Z", "until": "2026-01-15T00:00:00Z"},
        {"since": (datetime.now(UTC) + timedelta(hours=1)).isoformat()},
        {"since": (datetime.now(UTC) - timedelta(days=32)).isoformat()},
    ],
    ids=["since-after-until", "over-31-days", "since-in-the-future", "since-too-long-ago"],
)
def test_a_bad_window_is_a_422_problem_at_since(
    client: TestClient, factory: sessionmaker[Session], params: dict[str, str]
) -> None:
    body = _assert_problem(client.get(SUMMARY, params=params, headers=_key(factory).headers), 422)
    assert [error["loc"] for error in body["errors"]] == [["query", "since"]]


def test_a_malformed_instant_is_a_422_problem(client: TestClient, factory: sessionmaker[Session]) -> None:
    body = _assert_problem(
        client.get(SUMMARY, params={"until": "yesterday"}, headers=_key(factory).headers), 422
    )
    assert [error["loc"] for error in body["errors"]] == [["query", "until"]]


def test_queues_are_null_and_the_answer_quick_when_the_broker_is_down(
    private: Infrastructure, factory: sessionmaker[Session]
) -> None:
    reader = _key(factory)
    _insert(factory, reader.tenant_id, status="queued", created_at=datetime.now(UTC) - timedelta(minutes=1))
    with _client(private, BrokerSettings(url=DEAD_BROKER, connect_timeout_seconds=1)) as client:
        started = time.monotonic()
        response = client.get(SUMMARY, headers=reader.headers)
        elapsed = time.monotonic() - started

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["queues"] is None
    assert body["channels"]["email"]["total"] == 1
    assert elapsed < 2.0


def test_the_openapi_schema_says_queue_depths_are_deployment_wide(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    operation = schema["paths"][SUMMARY]["get"]
    assert "deployment-wide" in operation["description"]
    assert (
        "Deployment-wide"
        in schema["components"]["schemas"]["AnalyticsSummary"]["properties"]["queues"]["description"]
    )
    assert {"401", "403", "422"} <= set(operation["responses"])
