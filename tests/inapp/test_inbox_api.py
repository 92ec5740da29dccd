"""POST /v1/auth/token and the /v1/inbox routes through the gateway in-process (FastAPI TestClient,
lifespan running) against the test database and broker; inbox items are rows as the inapp worker
leaves them."""

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from devtools.stack import Infrastructure
from pulse.db import transaction
from pulse.inapp.tokens import EndUser, issue_token
from pulse.settings import DEVELOPMENT_JWT_SECRET
from tests.conftest import Tenant, wait_until
from tests.inapp.conftest import inbox_row, realtime_events
from tests.services.api.conftest import auth, in_process_gateway

PROBLEM_JSON = "application/problem+json"


@pytest.fixture(scope="module")
def client(infrastructure: Infrastructure) -> Iterator[TestClient]:
    with in_process_gateway(infrastructure) as client:
        yield client


def _token(client: TestClient, tenant: Tenant, user_id: str = "ada", **body: Any) -> str:
    response = client.post("/v1/auth/token", json={"user_id": user_id, **body}, headers=auth(tenant))
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    return body


def _items(
    session_factory: sessionmaker[Session], tenant: Tenant, user_id: str, count: int, **fields: Any
) -> list[uuid.UUID]:
    """`count` delivered items, a second apart, oldest first."""
    start = datetime.now(UTC) - timedelta(minutes=10)
    with transaction(session_factory) as session:
        return [
            inbox_row(session, tenant.id, user_id, created_at=start + timedelta(seconds=n), **fields)
            for n in range(count)
        ]


# --- tokens --------------------------------------------------------------------------------------


def test_a_send_or_admin_key_gets_a_token_for_one_of_its_users(client: TestClient, make_tenant: Any) -> None:
    for scopes in ("send", "admin"):
        tenant = make_tenant(scopes)
        before = datetime.now(UTC)
        response = client.post(
            "/v1/auth/token", json={"user_id": "ada", "ttl_seconds": 120}, headers=auth(tenant)
        )
        assert response.status_code == 200, response.text
        body = response.json()
        expires_at = datetime.fromisoformat(body["expires_at"])
        assert before + timedelta(seconds=119) <= expires_at <= datetime.now(UTC) + timedelta(seconds=120)
        claims = jwt.decode(body["token"], options={"verify_signature": False})
        assert (claims["sub"], claims["tenant"]) == ("ada", str(tenant.id))


def test_a_read_only_key_gets_no_token_and_no_key_is_401(client: TestClient, make_tenant: Any) -> None:
    reader = make_tenant("read")
    body = _problem(client.post("/v1/auth/token", json={"user_id": "ada"}, headers=auth(reader)), 403)
    assert "`send` or `admin`" in body["detail"]
    _problem(client.post("/v1/auth/token", json={"user_id": "ada"}), 401)


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({"user_id": "ada", "ttl_seconds": 59}, ["body", "ttl_seconds"]),
        ({"user_id": "ada", "ttl_seconds": 86401}, ["body", "ttl_seconds"]),
        ({"user_id": "ada", "ttl_seconds": "long"}, ["body", "ttl_seconds"]),
        ({"user_id": ""}, ["body", "user_id"]),
        ({"user_id": "u" * 256}, ["body", "user_id"]),
        ({"user_id": "a\u0000b"}, ["body", "user_id"]),
        ({}, ["body", "user_id"]),
        ({"user_id": "ada", "scope": "admin"}, ["body", "scope"]),
    ],
)
def test_bad_token_requests_are_422_naming_the_field(
    client: TestClient, tenant: Tenant, body: dict[str, Any], location: list[str]
) -> None:
    problem = _problem(client.post("/v1/auth/token", json=body, headers=auth(tenant)), 422)
    assert location in [error["loc"] for error in problem["errors"]]


# --- who may read an inbox -----------------------------------------------------------------------


def test_the_inbox_refuses_api_keys_and_bad_tokens_saying_why(client: TestClient, tenant: Tenant) -> None:
    expired, _ = issue_token(DEVELOPMENT_JWT_SECRET, EndUser(tenant.id, "ada"), -1)
    forged, _ = issue_token("not-the-deployment-secret-but-long-enough", EndUser(tenant.id, "ada"), 600)
    cases = {
        None: "missing end-user token",
        tenant.api_key: "an API key is not an end-user token",
        expired: "expired",
        forged: "signature",
        "not.a.jwt": "malformed",
    }
    for token, reason in cases.items():
        headers = {} if token is None else _as(token)
        for method, path in (
            ("GET", "/v1/inbox"),
            ("GET", "/v1/inbox/unread-count"),
            ("PATCH", f"/v1/inbox/{uuid.uuid4()}/read"),
            ("POST", "/v1/inbox/read-all"),
        ):
            body = _problem(client.request(method, path, headers=headers), 401)
            assert reason in body["detail"], (token, path, body)
    # The API key also fails as X-API-Key: the inbox reads end-user tokens only.
    _problem(client.get("/v1/inbox", headers={"X-API-Key": tenant.api_key}), 401)


def test_a_token_reads_only_its_own_users_inbox_in_its_own_tenant(
    client: TestClient, make_tenant: Any, session_factory: sessionmaker[Session]
) -> None:
    tenant, other = make_tenant(), make_tenant()
    [adas] = _items(session_factory, tenant, "ada", 1)
    [bobs] = _items(session_factory, tenant, "bob", 1)
    [other_adas] = _items(session_factory, other, "ada", 1)
    token = _token(client, tenant, "ada")

    listed = client.get("/v1/inbox", headers=_as(token)).json()
    assert [item["id"] for item in listed["items"]] == [str(adas)]
    for foreign in (bobs, other_adas):
        body = _problem(client.patch(f"/v1/inbox/{foreign}/read", headers=_as(token)), 404)
        assert str(foreign) in body["detail"]
    assert client.get("/v1/inbox/unread-count", headers=_as(_token(client, tenant, "bob"))).json() == {
        "unread_count": 1
    }


# --- the inbox -----------------------------------------------------------------------------------


def test_the_inbox_pages_newest_first_with_the_unread_count(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    ids = _items(session_factory, tenant, "ada", 5)
    with transaction(session_factory) as session:
        read = inbox_row(session, tenant.id, "ada", status="read")
    token = _token(client, tenant)

    first = client.get("/v1/inbox", params={"status": "unread", "limit": 2}, headers=_as(token)).json()
    assert [item["id"] for item in first["items"]] == [str(ids[4]), str(ids[3])]
    assert first["unread_count"] == 5
    assert set(first["items"][0]) == {
        "id",
        "subject",
        "body",
        "data",
        "priority",
        "status",
        "created_at",
        "read_at",
    }
    pages = [first]
    while pages[-1]["next_cursor"]:
        params = {"status": "unread", "limit": 2, "cursor": pages[-1]["next_cursor"]}
        pages.append(client.get("/v1/inbox", params=params, headers=_as(token)).json())
    assert [item["id"] for page in pages for item in page["items"]] == [str(i) for i in reversed(ids)]
    assert len(pages) == 3

    everything = client.get("/v1/inbox", headers=_as(token)).json()
    assert len(everything["items"]) == 6 and everything["next_cursor"] is None
    only_read = client.get("/v1/inbox", params={"status": "read"}, headers=_as(token)).json()
    assert [item["id"] for item in only_read["items"]] == [str(read)]


@pytest.mark.parametrize(
    ("params", "location"),
    [
        ({"status": "new"}, ["query", "status"]),
        ({"limit": 0}, ["query", "limit"]),
        ({"limit": 101}, ["query", "limit"]),
        ({"cursor": "not-ours"}, ["query", "cursor"]),
    ],
)
def test_bad_inbox_queries_are_422_naming_the_parameter(
    client: TestClient, tenant: Tenant, params: dict[str, Any], location: list[str]
) -> None:
    problem = _problem(client.get("/v1/inbox", params=params, headers=_as(_token(client, tenant))), 422)
    assert location in [error["loc"] for error in problem["errors"]]


def test_reading_an_item_answers_it_read_and_tells_the_users_other_connections(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], infrastructure: Infrastructure
) -> None:
    [item_id] = _items(session_factory, tenant, "ada", 1)
    token = _token(client, tenant)
    with realtime_events(infrastructure.broker_url, EndUser(tenant.id, "ada")) as received:
        response = client.patch(f"/v1/inbox/{item_id}/read", headers=_as(token))
        assert response.status_code == 200, response.text
        item = response.json()
        assert (item["id"], item["status"]) == (str(item_id), "read")
        assert item["read_at"] is not None
        [event] = wait_until(received, what="the read event")
    assert event == {"type": "read", "tenant_id": str(tenant.id), "user_id": "ada", "ids": [str(item_id)]}

    again = client.patch(f"/v1/inbox/{item_id}/read", headers=_as(token))
    assert again.status_code == 200 and again.json()["read_at"] == item["read_at"]
    assert client.get("/v1/inbox/unread-count", headers=_as(token)).json() == {"unread_count": 0}
    _problem(client.patch("/v1/inbox/not-a-uuid/read", headers=_as(token)), 422)


def test_read_all_marks_the_users_unread_items_read(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session], infrastructure: Infrastructure
) -> None:
    ids = _items(session_factory, tenant, "ada", 3)
    _items(session_factory, tenant, "bob", 2)
    token = _token(client, tenant)
    with realtime_events(infrastructure.broker_url, EndUser(tenant.id, "ada")) as received:
        assert client.post("/v1/inbox/read-all", headers=_as(token)).json() == {"updated": 3}
        [event] = wait_until(received, what="the read event")
    assert sorted(event["ids"]) == sorted(str(i) for i in ids)
    assert client.post("/v1/inbox/read-all", headers=_as(token)).json() == {"updated": 0}
    bob = _as(_token(client, tenant, "bob"))
    assert client.get("/v1/inbox/unread-count", headers=bob).json() == {"unread_count": 2}
