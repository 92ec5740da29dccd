"""The gateway in-process (FastAPI TestClient, lifespan running) against the test database and vhost."""

import json
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from kombu import Connection
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from devtools.stack import Infrastructure
from pulse.db import transaction
from pulse.db.models import Notification, OutboxMessage
from pulse.notifications.schemas import NotificationRequest
from pulse.notifications.service import accept_notification
from pulse.settings import BrokerSettings, DatabaseSettings
from services.api.main import create_app
from services.api.settings import ApiSettings
from tests.conftest import Tenant, wait_until
from tests.services.api.conftest import auth, in_process_gateway

PROBLEM_JSON = "application/problem+json"
UNREACHABLE_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:1/x"


@pytest.fixture(scope="module")
def unreachable_database_client(infrastructure: Infrastructure) -> Iterator[TestClient]:
    """A gateway whose database refuses connections (nothing listens on port 1)."""
    settings = ApiSettings(
        database=DatabaseSettings(url=UNREACHABLE_DATABASE, connect_timeout_seconds=1),
        broker=BrokerSettings(url=infrastructure.broker_url),
    )
    # Server errors come back as responses, so a 500 would fail an assertion instead of raising.
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def _email(recipient: str = "ada@example.com", **fields: Any) -> dict[str, Any]:
    return {
        "channel": "email",
        "recipient": recipient,
        "content": {"subject": "Your receipt", "body": "Thanks for your order."},
        **fields,
    }


def _assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"]
    assert body["title"]
    assert body["detail"]
    return body


def _assert_validation_problem(response: httpx.Response) -> list[dict[str, Any]]:
    body = _assert_problem(response, 422)
    errors: list[dict[str, Any]] = body["errors"]
    assert errors
    for error in errors:
        assert set(error) == {"loc", "msg", "type"}
        assert isinstance(error["loc"], list)
    return errors


def _seed(
    session_factory: sessionmaker[Session],
    tenant: Tenant,
    *,
    status: str | None = None,
    created_at: datetime | None = None,
    **fields: Any,
) -> str:
    """A notification stored straight through the library, never published (its outbox row is dropped),
    so no worker of the session's `stack` can change it while a test reads it."""
    body = {**_email(), **fields}
    with transaction(session_factory) as session:
        accepted = accept_notification(
            session, tenant_id=tenant.id, request=NotificationRequest.model_validate(body)
        )
        notification_id = accepted.notification.id
        session.execute(delete(OutboxMessage).where(OutboxMessage.notification_id == notification_id))
        changes: dict[str, Any] = {}
        if status is not None:
            changes["status"] = status
        if created_at is not None:
            changes["created_at"] = created_at
        if changes:
            session.execute(update(Notification).where(Notification.id == notification_id).values(changes))
    return str(notification_id)


def _list_ids(client: TestClient, tenant: Tenant, **params: Any) -> list[str]:
    response = client.get("/v1/notifications", params=params, headers=auth(tenant))
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def _metric(client: TestClient, sample: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return 0.0


def _take_task(broker_url: str, queue: str, notification_id: str) -> bool:
    """Remove this notification's task message from `queue`; other messages go back untouched."""
    with Connection(broker_url) as connection:
        channel = connection.channel()
        try:
            while (message := channel.basic_get(queue, no_ack=False)) is not None:
                task_args = json.loads(message.body)[0]
                if task_args == [notification_id]:
                    channel.basic_ack(message.delivery_tag)
                    return True
        finally:
            channel.close()  # Unacknowledged messages (other tests') are requeued.
    return False


def _status_in_database(session_factory: sessionmaker[Session], notification_id: str) -> str | None:
    with session_factory() as session:
        return session.scalar(
            select(Notification.status).where(Notification.id == uuid.UUID(notification_id))
        )


# --- authentication and authorisation ------------------------------------------------------------


def test_a_request_without_an_api_key_is_refused_with_401_problem(client: TestClient) -> None:
    for response in (client.get("/v1/notifications"), client.post("/v1/notifications", json=_email())):
        body = _assert_problem(response, 401)
        assert "API key" in body["detail"]


def test_a_request_with_an_unknown_api_key_is_refused_with_401_problem(client: TestClient) -> None:
    for headers in ({"Authorization": "Bearer pk_not-a-real-key"}, {"X-API-Key": "pk_not-a-real-key"}):
        body = _assert_problem(client.get("/v1/notifications", headers=headers), 401)
        assert "invalid" in body["detail"]


def test_the_api_key_is_accepted_in_the_x_api_key_header_as_well_as_bearer(
    client: TestClient, tenant: Tenant
) -> None:
    assert client.get("/v1/notifications", headers={"X-API-Key": tenant.api_key}).status_code == 200
    assert client.get("/v1/notifications", headers=auth(tenant)).status_code == 200


def test_a_key_without_the_send_scope_cannot_send(
    client: TestClient, make_tenant: Callable[..., Tenant]
) -> None:
    reader = make_tenant(scopes="read")
    body = _assert_problem(client.post("/v1/notifications", json=_email(), headers=auth(reader)), 403)
    assert "send" in body["detail"]


def test_a_key_without_the_read_scope_cannot_read(
    client: TestClient, make_tenant: Callable[..., Tenant], session_factory: sessionmaker[Session]
) -> None:
    sender = make_tenant(scopes="send")
    notification_id = _seed(session_factory, sender)
    _assert_problem(client.get("/v1/notifications", headers=auth(sender)), 403)
    _assert_problem(client.get(f"/v1/notifications/{notification_id}", headers=auth(sender)), 403)


def test_another_tenants_notification_is_not_found(
    client: TestClient, make_tenant: Callable[..., Tenant], session_factory: sessionmaker[Session]
) -> None:
    owner, stranger = make_tenant(), make_tenant()
    notification_id = _seed(session_factory, owner)
    _assert_problem(client.get(f"/v1/notifications/{notification_id}", headers=auth(stranger)), 404)
    assert client.get(f"/v1/notifications/{notification_id}", headers=auth(owner)).status_code == 200


def test_an_unknown_notification_id_is_not_found(client: TestClient, tenant: Tenant) -> None:
    _assert_problem(client.get(f"/v1/notifications/{uuid.uuid4()}", headers=auth(tenant)), 404)


def test_a_malformed_notification_id_is_a_422_problem(client: TestClient, tenant: Tenant) -> None:
    [error] = _assert_validation_problem(client.get("/v1/notifications/not-a-uuid", headers=auth(tenant)))
    assert error["loc"] == ["path", "notification_id"]


# --- sending -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("priority", "queue"), [(None, "pulse.email.normal"), ("high", "pulse.email.high")])
def test_an_accepted_notification_is_stored_and_its_task_published_to_the_priority_queue(
    client: TestClient,
    tenant: Tenant,
    session_factory: sessionmaker[Session],
    infrastructure: Infrastructure,
    priority: str | None,
    queue: str,
) -> None:
    request = _email("Ada@EXAMPLE.com", metadata={"order": "A-1001", "tags": ["x"]}, user_id="u-1")
    if priority is not None:
        request["priority"] = priority
    response = client.post("/v1/notifications", json=request, headers=auth(tenant))

    assert response.status_code == 202, response.text
    body = response.json()
    notification_id = body["id"]
    assert body["status"] == "queued"
    assert body["attempts"] == []
    assert body["attempt_count"] == 0
    assert body["priority"] == (priority or "normal")
    assert body["recipient"] == "Ada@example.com"  # email-validator lower-cases the domain only.
    assert body["metadata"] == {"order": "A-1001", "tags": ["x"]}
    assert body["user_id"] == "u-1"
    assert body["content"]["subject"] == "Your receipt"

    with session_factory() as session:
        row = session.get_one(Notification, uuid.UUID(notification_id))
        assert (row.tenant_id, row.recipient, row.meta) == (tenant.id, "Ada@example.com", body["metadata"])

    # If the session's `stack` fixture already runs, its email worker consumes this vhost's email
    # queues and may take the message first; then the row has left `queued`, which proves the
    # publish as well.
    wait_until(
        lambda: (
            _take_task(infrastructure.broker_url, queue, notification_id)
            or _status_in_database(session_factory, notification_id) != "queued"
        ),
        timeout=10,
        what=f"the task of {notification_id} in {queue}",
    )


def test_a_fresh_notification_is_read_back_with_an_empty_attempt_list(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    notification_id = _seed(session_factory, tenant, metadata={"k": "v"})
    response = client.get(f"/v1/notifications/{notification_id}", headers=auth(tenant))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == notification_id
    assert body["status"] == "queued"
    assert body["attempts"] == []
    assert body["metadata"] == {"k": "v"}


@pytest.mark.parametrize(
    ("change", "expected_loc"),
    [
        pytest.param({"recipient": "not-an-email"}, ["body", "recipient"], id="invalid-email"),
        pytest.param({"content": {"body": "no subject"}}, ["body", "content"], id="email-without-subject"),
        pytest.param({"channel": "carrier-pigeon"}, ["body", "channel"], id="unknown-channel"),
        pytest.param({"colour": "red"}, ["body", "colour"], id="unknown-field"),
        pytest.param({"priority": "urgent"}, ["body", "priority"], id="unknown-priority"),
    ],
)
def test_invalid_input_is_a_422_problem_with_field_errors(
    client: TestClient, tenant: Tenant, change: dict[str, Any], expected_loc: list[str]
) -> None:
    errors = _assert_validation_problem(
        client.post("/v1/notifications", json={**_email(), **change}, headers=auth(tenant))
    )
    assert expected_loc in [error["loc"] for error in errors]


def test_the_email_specific_errors_name_their_field_and_reason(client: TestClient, tenant: Tenant) -> None:
    response = client.post("/v1/notifications", json=_email("not-an-email"), headers=auth(tenant))
    [error] = _assert_validation_problem(response)
    assert error["loc"] == ["body", "recipient"]
    assert "valid email address" in error["msg"]

    response = client.post(
        "/v1/notifications", json={**_email(), "content": {"body": "b"}}, headers=auth(tenant)
    )
    [error] = _assert_validation_problem(response)
    assert error["loc"] == ["body", "content"]
    assert "subject is required" in error["msg"]


@pytest.mark.parametrize("channel", ["sms", "whatsapp"])
def test_phone_channels_refuse_invalid_numbers_and_long_bodies_with_422(
    client: TestClient, tenant: Tenant, channel: str
) -> None:
    def send(recipient: str, body: str = "Your code is 123456") -> httpx.Response:
        request = {"channel": channel, "recipient": recipient, "content": {"body": body}}
        return client.post("/v1/notifications", json=request, headers=auth(tenant))

    for invalid in ("not-a-number", "4155550100", "+1415555", "ada@example.com"):
        [error] = _assert_validation_problem(send(invalid))
        assert error["loc"] == ["body", "recipient"], invalid
        assert "phone number" in error["msg"]

    [error] = _assert_validation_problem(send("+14155550100", "x" * 1601))
    assert error["loc"] == ["body", "content"]
    assert "1600 characters" in error["msg"]


def test_phone_numbers_are_stored_in_e164_without_a_whatsapp_prefix(
    client: TestClient, tenant: Tenant
) -> None:
    for channel, recipient in (("sms", "+1 (415) 555-0100"), ("whatsapp", "whatsapp:+14155550100")):
        request = {"channel": channel, "recipient": recipient, "content": {"body": "x" * 1600}}
        response = client.post("/v1/notifications", json=request, headers=auth(tenant))
        assert response.status_code == 202, response.text
        assert response.json()["recipient"] == "+14155550100"


def test_a_body_that_is_not_json_is_a_422_problem(client: TestClient, tenant: Tenant) -> None:
    response = client.post(
        "/v1/notifications",
        content=b'{"channel": "email",',
        headers={**auth(tenant), "Content-Type": "application/json"},
    )
    [error] = _assert_validation_problem(response)
    assert error["type"] == "json_invalid"


def test_a_channel_not_enabled_on_the_deployment_is_refused_with_422(
    infrastructure: Infrastructure, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    request = {
        "channel": "inapp",
        "recipient": "user-123",
        "content": {"body": "Your code is 123456"},
        "metadata": {"marker": str(uuid.uuid4())},
    }
    with in_process_gateway(
        infrastructure, enabled_channels=["email", "sms", "whatsapp", "push", "webhook"]
    ) as client:
        response = client.post("/v1/notifications", json=request, headers=auth(tenant))
    body = _assert_problem(response, 422)
    assert body["detail"] == (
        "channel 'inapp' is not enabled on this deployment (enabled: email, sms, whatsapp, push, webhook)"
    )
    assert [error["loc"] for error in body["errors"]] == [["body", "channel"]]
    with session_factory() as session:
        stored = session.scalar(
            select(func.count()).select_from(Notification).where(Notification.tenant_id == tenant.id)
        )
    assert stored == 0


@pytest.mark.parametrize("limit", [0, 201, -1])
def test_a_list_limit_outside_1_to_200_is_a_422_problem(
    client: TestClient, tenant: Tenant, limit: int
) -> None:
    [error] = _assert_validation_problem(
        client.get("/v1/notifications", params={"limit": limit}, headers=auth(tenant))
    )
    assert error["loc"] == ["query", "limit"]


@pytest.mark.parametrize("cursor", ["garbage!", "Zm9v", "bm90LWEtZGF0ZXxub3QtYS11dWlk"])
def test_a_cursor_the_api_did_not_issue_is_a_422_problem(
    client: TestClient, tenant: Tenant, cursor: str
) -> None:
    response = client.get("/v1/notifications", params={"cursor": cursor}, headers=auth(tenant))
    body = _assert_problem(response, 422)
    assert "cursor" in body["detail"]
    assert [error["loc"] for error in body["errors"]] == [["query", "cursor"]]


def test_a_body_over_256_kib_with_content_length_is_refused_with_413(
    client: TestClient, tenant: Tenant
) -> None:
    request = _email(metadata={"padding": "x" * (256 * 1024)})
    response = client.post(
        "/v1/notifications",
        content=json.dumps(request).encode(),
        headers={**auth(tenant), "Content-Type": "application/json"},
    )
    _assert_problem(response, 413)


def test_a_body_just_under_the_limit_is_accepted(client: TestClient, tenant: Tenant) -> None:
    # Padded in the body: metadata alone is limited to 64 KiB.
    request = _email()
    room = 256 * 1024 - len(json.dumps(request).encode())
    request["content"]["body"] += "x" * room
    content = json.dumps(request).encode()
    assert len(content) == 256 * 1024
    response = client.post(
        "/v1/notifications", content=content, headers={**auth(tenant), "Content-Type": "application/json"}
    )
    assert response.status_code == 202, response.text[:300]


def test_a_streamed_body_over_256_kib_without_content_length_is_refused_with_413(
    client: TestClient, tenant: Tenant
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"channel": "email", "recipient": "ada@example.com", "metadata": {"padding": "'
        for _ in range(30):
            yield b"x" * 10_000
        yield b'"}, "content": {"subject": "s", "body": "b"}}'

    response = client.post(
        "/v1/notifications", content=chunks(), headers={**auth(tenant), "Content-Type": "application/json"}
    )
    _assert_problem(response, 413)


# --- idempotency ---------------------------------------------------------------------------------


def test_the_same_idempotency_key_and_body_replay_the_original_notification(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    headers = {**auth(tenant), "Idempotency-Key": f"order-{uuid.uuid4()}"}
    first = client.post("/v1/notifications", json=_email(), headers=headers)
    second = client.post("/v1/notifications", json=_email(), headers=headers)

    assert first.status_code == 202, first.text
    assert "Idempotent-Replayed" not in first.headers
    assert second.status_code == 200, second.text
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json()["id"] == first.json()["id"]
    with session_factory() as session:
        count = session.scalar(
            select(func.count()).select_from(Notification).where(Notification.tenant_id == tenant.id)
        )
    assert count == 1


def test_the_same_idempotency_key_with_a_different_body_is_a_409_problem(
    client: TestClient, tenant: Tenant
) -> None:
    headers = {**auth(tenant), "Idempotency-Key": f"order-{uuid.uuid4()}"}
    assert client.post("/v1/notifications", json=_email(), headers=headers).status_code == 202
    response = client.post("/v1/notifications", json=_email("grace@example.com"), headers=headers)
    assert "Idempotency-Key" in _assert_problem(response, 409)["detail"]


def test_tenants_use_the_same_idempotency_key_independently(
    client: TestClient, make_tenant: Callable[..., Tenant]
) -> None:
    key = f"order-{uuid.uuid4()}"
    first, second = make_tenant(), make_tenant()
    one = client.post("/v1/notifications", json=_email(), headers={**auth(first), "Idempotency-Key": key})
    other = client.post("/v1/notifications", json=_email(), headers={**auth(second), "Idempotency-Key": key})
    assert (one.status_code, other.status_code) == (202, 202)
    assert one.json()["id"] != other.json()["id"]


def test_concurrent_requests_with_one_idempotency_key_create_one_notification(
    tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    request = NotificationRequest.model_validate(_email())
    key = f"race-{uuid.uuid4()}"

    def accept(_: int) -> uuid.UUID:
        with transaction(session_factory) as session:
            accepted = accept_notification(session, tenant_id=tenant.id, request=request, idempotency_key=key)
            return accepted.notification.id

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(accept, range(8)))

    assert len(set(ids)) == 1
    with session_factory() as session:
        stored = session.scalars(select(Notification.id).where(Notification.tenant_id == tenant.id)).all()
    assert stored == [ids[0]]


# --- listing -------------------------------------------------------------------------------------


def test_the_list_is_newest_first_and_filters_by_every_field(
    client: TestClient, make_tenant: Callable[..., Tenant], session_factory: sessionmaker[Session]
) -> None:
    tenant = make_tenant()
    base = datetime(2030, 1, 1, 12, tzinfo=UTC)
    oldest = _seed(session_factory, tenant, created_at=base, user_id="alice")
    high = _seed(session_factory, tenant, created_at=base + timedelta(minutes=1), priority="high")
    failed = _seed(session_factory, tenant, created_at=base + timedelta(minutes=2), status="failed")
    sms = _seed(
        session_factory,
        tenant,
        created_at=base + timedelta(minutes=3),
        channel="sms",
        recipient="+14155550100",
        content={"body": "code 1234"},
        user_id="alice",
    )

    assert _list_ids(client, tenant) == [sms, failed, high, oldest]
    assert _list_ids(client, tenant, status="failed") == [failed]
    assert _list_ids(client, tenant, status="queued") == [sms, high, oldest]
    assert _list_ids(client, tenant, channel="sms") == [sms]
    assert _list_ids(client, tenant, channel="email") == [failed, high, oldest]
    assert _list_ids(client, tenant, priority="high") == [high]
    assert _list_ids(client, tenant, user_id="alice") == [sms, oldest]
    assert _list_ids(client, tenant, user_id="nobody") == []
    after = (base + timedelta(minutes=1)).isoformat()
    before = (base + timedelta(minutes=3)).isoformat()
    assert _list_ids(client, tenant, created_after=after) == [sms, failed, high]  # inclusive
    assert _list_ids(client, tenant, created_before=before) == [failed, high, oldest]  # exclusive
    assert _list_ids(client, tenant, created_after=after, created_before=before) == [failed, high]
    assert _list_ids(client, tenant, channel="email", user_id="alice") == [oldest]


def test_invalid_list_filters_are_a_422_problem(client: TestClient, tenant: Tenant) -> None:
    for params in ({"status": "lost"}, {"channel": "fax"}, {"priority": "urgent"}, {"created_after": "soon"}):
        [error] = _assert_validation_problem(
            client.get("/v1/notifications", params=params, headers=auth(tenant))
        )
        assert error["loc"] == ["query", next(iter(params))]


def test_cursor_pagination_visits_every_notification_once(
    client: TestClient, make_tenant: Callable[..., Tenant], session_factory: sessionmaker[Session]
) -> None:
    tenant = make_tenant()
    same_instant = datetime(2030, 1, 1, tzinfo=UTC)
    # Four share one created_at, so the pages must be ordered by id as well.
    ids = [
        _seed(session_factory, tenant, created_at=same_instant + timedelta(seconds=min(i, 3)))
        for i in range(7)
    ]

    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        response = client.get("/v1/notifications", params=params, headers=auth(tenant))
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(pages) < 5, "pagination does not end"

    assert [len(page) for page in pages] == [3, 3, 1]
    listed = [item["id"] for page in pages for item in page]
    assert len(listed) == len(set(listed)) == 7
    assert set(listed) == set(ids)
    keys = [(item["created_at"], item["id"]) for page in pages for item in page]
    assert keys == sorted(keys, reverse=True)
    assert all("attempts" not in item for page in pages for item in page)


def test_a_tenant_lists_only_its_own_notifications(
    client: TestClient, make_tenant: Callable[..., Tenant], session_factory: sessionmaker[Session]
) -> None:
    owner, stranger = make_tenant(), make_tenant()
    notification_id = _seed(session_factory, owner)
    assert _list_ids(client, owner) == [notification_id]
    response = client.get("/v1/notifications", headers=auth(stranger))
    assert response.json() == {"items": [], "next_cursor": None}


# --- operations ----------------------------------------------------------------------------------


def test_healthz_answers_without_authentication(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_reports_database_and_broker_ok(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_readyz_is_503_when_the_database_is_unreachable(unreachable_database_client: TestClient) -> None:
    response = unreachable_database_client.get("/readyz")
    assert response.status_code == 503, response.text
    checks = response.json()["checks"]
    assert checks["database"].startswith("unavailable")
    assert checks["broker"] == "ok"


def test_a_send_while_the_database_is_unreachable_is_a_503_problem_without_internals(
    unreachable_database_client: TestClient,
) -> None:
    response = unreachable_database_client.post(
        "/v1/notifications", json=_email(), headers={"Authorization": "Bearer pk_whatever"}
    )
    body = _assert_problem(response, 503)
    assert response.headers["Retry-After"].isdigit()
    for leak in ("Traceback", "psycopg", "OperationalError", "127.0.0.1", "sqlalche"):
        assert leak not in response.text
    assert set(body) == {"type", "title", "status", "detail"}


def test_a_send_while_the_broker_is_down_is_accepted_and_left_to_the_outbox(
    infrastructure: Infrastructure, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    settings = ApiSettings(
        database=DatabaseSettings(url=infrastructure.database_url),
        broker=BrokerSettings(url="amqp://guest:guest@127.0.0.1:1/nowhere", connect_timeout_seconds=1),
        # Keeps the session's scheduler (if the `stack` runs) from sweeping the row while we look.
        publish_grace_seconds=600,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = client.post("/v1/notifications", json=_email(), headers=auth(tenant))
        assert response.status_code == 202, response.text
        notification_id = uuid.UUID(response.json()["id"])

        with session_factory() as session:
            owed = session.scalars(
                select(OutboxMessage.routing_key).where(OutboxMessage.notification_id == notification_id)
            ).all()
        assert owed == ["email.normal"]

        readiness = client.get("/readyz")
        assert readiness.status_code == 503
        assert readiness.json()["checks"]["database"] == "ok"
        assert readiness.json()["checks"]["broker"].startswith("unavailable")


def test_metrics_count_accepted_notifications_and_time_requests_by_route_template(
    client: TestClient, tenant: Tenant
) -> None:
    accepted = 'pulse_notifications_accepted_total{channel="email",priority="normal"}'
    before = _metric(client, accepted)
    response = client.post("/v1/notifications", json=_email(), headers=auth(tenant))
    assert response.status_code == 202
    client.get(f"/v1/notifications/{response.json()['id']}", headers=auth(tenant))

    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert _metric(client, accepted) == before + 1
    buckets = [
        line
        for line in metrics.text.splitlines()
        if line.startswith("pulse_http_request_duration_seconds_bucket")
    ]
    assert any('route="/v1/notifications"' in line and 'method="POST"' in line for line in buckets)
    assert any('route="/v1/notifications/{notification_id}"' in line for line in buckets)
    assert not any(response.json()["id"] in line for line in buckets)


def test_the_openapi_schema_lists_the_notification_routes(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert "/v1/notifications" in schema["paths"]
    assert "/v1/notifications/{notification_id}" in schema["paths"]
    assert client.get("/docs").status_code == 200
    assert client.get("/redoc").status_code == 200


def test_docs_are_not_served_when_disabled(infrastructure: Infrastructure) -> None:
    settings = ApiSettings(
        database=DatabaseSettings(url=infrastructure.database_url),
        broker=BrokerSettings(url=infrastructure.broker_url),
        enable_docs=False,
    )
    with TestClient(create_app(settings)) as client:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert client.get(path).status_code == 404, path
        assert client.get("/healthz").status_code == 200
