"""POST/GET/DELETE /v1/api-keys through the gateway in-process (FastAPI TestClient, lifespan running)
against the test database: scopes, tenant isolation, no secrets listed, expiry and last use."""

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from devtools.stack import Infrastructure
from pulse.db import transaction
from pulse.db.models import ApiKey
from pulse.settings import BrokerSettings, DatabaseSettings
from pulse.tenants.service import MAX_ACTIVE_KEYS, Scope, issue_api_key
from services.api.main import create_app
from services.api.settings import ApiSettings
from tests.conftest import Tenant, wait_until
from tests.services.api.conftest import auth

PROBLEM_JSON = "application/problem+json"
LISTED = {"id", "prefix", "name", "scopes", "created_at", "expires_at", "last_used_at", "revoked_at"}


def _problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["detail"]
    return body


def _issue(client: TestClient, tenant: Tenant, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/api-keys", json={"scopes": ["send"], **body}, headers=auth(tenant))
    assert response.status_code == 201, response.text
    issued: dict[str, Any] = response.json()
    return issued


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_key_is_shown_once_works_and_is_listed_without_its_secret(
    client: TestClient, tenant: Tenant
) -> None:
    issued = _issue(client, tenant, scopes=["read", "send"], name="billing service")

    assert set(issued) == LISTED | {"key"}
    assert issued["key"].startswith("pk_") and issued["prefix"] == issued["key"][:10]
    assert (issued["name"], issued["scopes"], issued["expires_at"]) == (
        "billing service",
        ["read", "send"],
        None,
    )
    assert client.get("/v1/notifications", headers=_bearer(issued["key"])).status_code == 200

    listing = client.get("/v1/api-keys", headers=auth(tenant))
    assert listing.status_code == 200, listing.text
    items = listing.json()["items"]
    # Newest first: the new key, then the tenant's own.
    assert items[0]["id"] == issued["id"]
    assert [item["prefix"] for item in items] == [issued["prefix"], tenant.api_key[:10]]
    assert all(set(item) == LISTED for item in items)
    for secret in (issued["key"], issued["key"][10:], tenant.api_key, tenant.api_key[10:]):
        assert secret not in listing.text


def test_the_listing_is_paginated_newest_first(client: TestClient, tenant: Tenant) -> None:
    ids = [_issue(client, tenant, name=f"key {number}")["id"] for number in range(3)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/api-keys", params=params, headers=auth(tenant)).json()
        seen += [item["id"] for item in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert seen[:3] == ids[::-1] and len(seen) == 4


def test_managing_keys_needs_the_admin_scope(client: TestClient, make_tenant: Callable[..., Tenant]) -> None:
    others = make_tenant(scopes="send,read")
    for response in (
        client.post("/v1/api-keys", json={"scopes": ["send"]}, headers=auth(others)),
        client.get("/v1/api-keys", headers=auth(others)),
        client.delete(f"/v1/api-keys/{uuid.uuid4()}", headers=auth(others)),
    ):
        assert "admin" in _problem(response, 403)["detail"]
    _problem(client.get("/v1/api-keys"), 401)


def test_a_key_cannot_grant_scopes_it_does_not_hold(
    client: TestClient, make_tenant: Callable[..., Tenant], session_factory: sessionmaker[Session]
) -> None:
    admin_only = make_tenant(scopes="admin")

    refused = client.post(
        "/v1/api-keys", json={"scopes": ["admin", "send", "read"]}, headers=auth(admin_only)
    )

    detail = _problem(refused, 403)["detail"]
    assert "`read`" in detail and "`send`" in detail and "`admin`" not in detail
    assert _issue(client, admin_only, scopes=["admin"])["scopes"] == ["admin"]
    with session_factory() as session:
        keys = session.scalars(select(ApiKey.scopes).where(ApiKey.tenant_id == admin_only.id)).all()
    assert sorted(keys) == [["admin"], ["admin"]]


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({"scopes": []}, ["body", "scopes"]),
        ({"scopes": ["root"]}, ["body", "scopes", 0]),
        ({"scopes": ["send"], "expires_at": "2001-01-01T00:00:00Z"}, ["body", "expires_at"]),
        ({"scopes": ["send"], "expires_at": "tomorrow"}, ["body", "expires_at"]),
        ({"scopes": ["send"], "name": "x" * 101}, ["body", "name"]),
        ({"scopes": ["send"], "key": "pk_mine"}, ["body", "key"]),
    ],
)
def test_invalid_requests_are_refused_naming_the_field(
    client: TestClient, tenant: Tenant, body: dict[str, Any], location: list[Any]
) -> None:
    problem = _problem(client.post("/v1/api-keys", json=body, headers=auth(tenant)), 422)
    assert location in [error["loc"] for error in problem["errors"]]


def test_a_naive_expiry_is_read_as_utc(client: TestClient, tenant: Tenant) -> None:
    issued = _issue(client, tenant, expires_at="2030-01-31T09:00:00")
    assert datetime.fromisoformat(issued["expires_at"]) == datetime(2030, 1, 31, 9, tzinfo=UTC)


def test_an_expired_key_is_refused_as_expired(client: TestClient, tenant: Tenant) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=5)
    issued = _issue(client, tenant, scopes=["read"], expires_at=soon.isoformat())
    assert datetime.fromisoformat(issued["expires_at"]) == soon
    # Used while valid, so that the gateway remembers it: expiry is checked on what it remembers too.
    assert client.get("/v1/notifications", headers=_bearer(issued["key"])).status_code == 200

    def refused() -> httpx.Response | None:
        response = client.get("/v1/notifications", headers=_bearer(issued["key"]))
        return response if response.status_code == 401 else None

    response = wait_until(refused, timeout=30, what="the key to expire")
    assert "expired" in _problem(response, 401)["detail"]
    assert datetime.now(UTC) >= soon


def test_a_revoked_key_is_refused_and_stays_listed(client: TestClient, tenant: Tenant) -> None:
    issued = _issue(client, tenant, scopes=["send"])

    assert client.delete(f"/v1/api-keys/{issued['id']}", headers=auth(tenant)).status_code == 204

    def refused() -> bool:
        return client.get("/v1/notifications", headers=_bearer(issued["key"])).status_code == 401

    wait_until(refused, timeout=30, what="the revoked key to be refused")
    listed = {item["id"]: item for item in client.get("/v1/api-keys", headers=auth(tenant)).json()["items"]}
    assert listed[issued["id"]]["revoked_at"] is not None
    assert listed[tenant_key_id(client, tenant)]["revoked_at"] is None
    # Revoking it again: it has no such active key.
    _problem(client.delete(f"/v1/api-keys/{issued['id']}", headers=auth(tenant)), 404)


def tenant_key_id(client: TestClient, tenant: Tenant) -> str:
    items = client.get("/v1/api-keys", headers=auth(tenant)).json()["items"]
    return str(next(item["id"] for item in items if item["prefix"] == tenant.api_key[:10]))


def test_another_tenants_key_is_not_found_and_stays_active(
    client: TestClient, make_tenant: Callable[..., Tenant]
) -> None:
    owner, stranger = make_tenant(), make_tenant()
    owned = tenant_key_id(client, owner)

    _problem(client.delete(f"/v1/api-keys/{owned}", headers=auth(stranger)), 404)

    assert owned not in client.get("/v1/api-keys", headers=auth(stranger)).text
    assert client.get("/v1/api-keys", headers=auth(owner)).status_code == 200


def test_a_tenant_has_a_bounded_number_of_active_keys(
    client: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    with transaction(session_factory) as session:
        for _ in range(MAX_ACTIVE_KEYS - 1):  # The tenant's own key is the first.
            issue_api_key(session, tenant_id=tenant.id, scopes=[Scope.SEND])

    _problem(client.post("/v1/api-keys", json={"scopes": ["send"]}, headers=auth(tenant)), 409)

    revoked = client.get("/v1/api-keys", params={"limit": 1}, headers=auth(tenant)).json()["items"][0]
    assert client.delete(f"/v1/api-keys/{revoked['id']}", headers=auth(tenant)).status_code == 204
    _issue(client, tenant)


# --- last use ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def uncached(infrastructure: Infrastructure) -> Iterator[TestClient]:
    """A gateway that looks every key up (no auth cache): each request is a chance to mark it used."""
    settings = ApiSettings(
        database=DatabaseSettings(url=infrastructure.database_url),
        broker=BrokerSettings(url=infrastructure.broker_url),
        auth_cache_seconds=0,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def _last_used(session_factory: sessionmaker[Session], tenant: Tenant) -> datetime | None:
    with session_factory() as session:
        return session.scalar(select(ApiKey.last_used_at).where(ApiKey.tenant_id == tenant.id))


def test_last_used_at_is_marked_at_most_once_a_minute(
    uncached: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    assert _last_used(session_factory, tenant) is None

    for _ in range(3):
        assert uncached.get("/v1/notifications", headers=auth(tenant)).status_code == 200
    first = _last_used(session_factory, tenant)
    assert first is not None and first > datetime.now(UTC) - timedelta(minutes=1)
    listed = uncached.get("/v1/api-keys", headers=auth(tenant)).json()["items"][0]
    assert datetime.fromisoformat(listed["last_used_at"]) == first  # The two later uses changed nothing.

    with transaction(session_factory) as session:
        session.execute(
            update(ApiKey)
            .where(ApiKey.tenant_id == tenant.id)
            .values(last_used_at=first - timedelta(minutes=2))
        )
    assert uncached.get("/v1/notifications", headers=auth(tenant)).status_code == 200
    later = _last_used(session_factory, tenant)
    assert later is not None and later >= first


def test_a_refused_key_is_not_marked_used(
    uncached: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    with transaction(session_factory) as session:
        session.execute(
            update(ApiKey)
            .where(ApiKey.tenant_id == tenant.id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )

    assert "expired" in _problem(uncached.get("/v1/notifications", headers=auth(tenant)), 401)["detail"]
    assert _last_used(session_factory, tenant) is None
