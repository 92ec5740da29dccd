"""Rate limits through the gateway: per (tenant, user id or recipient, channel), in PostgreSQL."""

import uuid
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from pulse.db import transaction
from pulse.db.models import Notification
from pulse.tenants.service import configure_tenant
from tests.conftest import Tenant
from tests.services.api.conftest import auth


def _sms(user_id: str | None = None, **fields: Any) -> dict[str, Any]:
    body = {"channel": "sms", "recipient": "+14155550100", "content": {"body": "Your code is 1234"}}
    if user_id is not None:
        body["user_id"] = user_id
    return {**body, **fields}


def _count(session_factory: sessionmaker[Session], tenant: Tenant) -> int:
    with session_factory() as session:
        return session.scalar(select(func.count()).where(Notification.tenant_id == tenant.id)) or 0


def test_the_eleventh_send_to_a_user_within_a_minute_gets_429(
    gateway: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    responses = [gateway.post("/v1/notifications", json=_sms("u-1"), headers=auth(tenant)) for _ in range(11)]

    assert [response.status_code for response in responses] == [202] * 10 + [429]
    assert [int(response.headers["RateLimit-Remaining"]) for response in responses] == [*range(9, -1, -1), 0]
    assert all(response.headers["RateLimit-Limit"] == "10" for response in responses)
    refused = responses[-1]
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["RateLimit-Reset"] == refused.headers["Retry-After"]
    assert "rate limit" in refused.json()["detail"]
    # Checked before anything is written: the refused send left nothing behind.
    assert _count(session_factory, tenant) == 10


def test_limits_count_per_user_channel_and_tenant(
    gateway: TestClient, make_tenant: Callable[..., Tenant]
) -> None:
    tenant, other_tenant = make_tenant(), make_tenant()
    for _ in range(10):
        assert gateway.post("/v1/notifications", json=_sms("u-1"), headers=auth(tenant)).status_code == 202

    assert gateway.post("/v1/notifications", json=_sms("u-1"), headers=auth(tenant)).status_code == 429
    other_user = _sms("u-2", recipient="+14155550199")
    assert gateway.post("/v1/notifications", json=other_user, headers=auth(tenant)).status_code == 202
    whatsapp = _sms("u-1", channel="whatsapp")
    assert gateway.post("/v1/notifications", json=whatsapp, headers=auth(tenant)).status_code == 202
    assert gateway.post("/v1/notifications", json=_sms("u-1"), headers=auth(other_tenant)).status_code == 202


def test_varying_the_user_id_does_not_lift_the_limit_of_one_phone_number(
    gateway: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    codes = [
        gateway.post("/v1/notifications", json=_sms(f"user-{n}"), headers=auth(tenant)).status_code
        for n in range(12)
    ]

    assert codes == [202] * 10 + [429] * 2
    assert _count(session_factory, tenant) == 10


def test_without_a_user_id_the_recipient_address_is_counted(gateway: TestClient, tenant: Tenant) -> None:
    email = {"channel": "email", "content": {"subject": "Hi", "body": "Hello"}}
    for _ in range(10):
        sent = gateway.post(
            "/v1/notifications", json={**email, "recipient": "ada@example.com"}, headers=auth(tenant)
        )
        assert sent.status_code == 202
    # The same address, spelled differently: the normalised address is counted.
    again = gateway.post(
        "/v1/notifications", json={**email, "recipient": "ada@EXAMPLE.com"}, headers=auth(tenant)
    )
    tagged = gateway.post(
        "/v1/notifications", json={**email, "recipient": "Ada+promo@example.com"}, headers=auth(tenant)
    )
    other = gateway.post(
        "/v1/notifications", json={**email, "recipient": "bob@example.com"}, headers=auth(tenant)
    )

    assert again.status_code == 429
    assert tagged.status_code == 429  # The same mailbox, with a sub-address.
    assert other.status_code == 202


def test_a_tenant_may_have_its_own_limit_or_none(
    gateway: TestClient, make_tenant: Callable[..., Tenant], session_factory: sessionmaker[Session]
) -> None:
    strict, unlimited = make_tenant(), make_tenant()
    with transaction(session_factory) as session:
        configure_tenant(session, name=strict.name, rate_limit="2", rate_limit_window_seconds=3600)
        configure_tenant(session, name=unlimited.name, rate_limit="off", sends_per_minute="off")

    strict_codes = [
        gateway.post("/v1/notifications", json=_sms("u-1"), headers=auth(strict)).status_code
        for _ in range(3)
    ]
    unlimited_responses = [
        gateway.post("/v1/notifications", json=_sms("u-1"), headers=auth(unlimited)) for _ in range(12)
    ]

    assert strict_codes == [202, 202, 429]
    assert [response.status_code for response in unlimited_responses] == [202] * 12
    assert "RateLimit-Limit" not in unlimited_responses[0].headers


def test_an_idempotent_replay_does_not_use_up_the_limit(gateway: TestClient, tenant: Tenant) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4()), **auth(tenant)}
    first = gateway.post("/v1/notifications", json=_sms("u-1"), headers=key)
    replays = [gateway.post("/v1/notifications", json=_sms("u-1"), headers=key) for _ in range(12)]

    assert first.status_code == 202
    assert {replay.status_code for replay in replays} == {200}
    assert int(first.headers["RateLimit-Remaining"]) == 9
    assert (
        gateway.post("/v1/notifications", json=_sms("u-1"), headers=auth(tenant)).headers[
            "RateLimit-Remaining"
        ]
        == "8"
    )


def test_a_batch_is_counted_item_by_item(
    gateway: TestClient, tenant: Tenant, session_factory: sessionmaker[Session]
) -> None:
    batch = {"mode": "best_effort", "notifications": [_sms("u-1") for _ in range(12)]}
    response = gateway.post("/v1/notifications/batch", json=batch, headers=auth(tenant))

    assert response.status_code == 202, response.text
    results = response.json()["results"]
    assert [bool(result["id"]) for result in results] == [True] * 10 + [False] * 2
    assert [result["error"]["status"] for result in results[10:]] == [429, 429]
    assert response.headers["RateLimit-Remaining"] == "0"
    assert _count(session_factory, tenant) == 10

    all_or_nothing = {"mode": "all_or_nothing", "notifications": [_sms("u-2") for _ in range(11)]}
    refused = gateway.post("/v1/notifications/batch", json=all_or_nothing, headers=auth(tenant))
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["Retry-After"]) >= 1
    assert _count(session_factory, tenant) == 10


def test_a_tenant_over_its_quota_gets_429_whoever_it_sends_to_and_other_tenants_do_not(
    gateway: TestClient, make_tenant: Callable[..., Tenant], session_factory: sessionmaker[Session]
) -> None:
    busy, other = make_tenant(), make_tenant()
    with transaction(session_factory) as session:
        configure_tenant(session, name=busy.name, sends_per_minute="3")

    responses = [
        gateway.post("/v1/notifications", json=_sms(recipient=f"+1415555010{n}"), headers=auth(busy))
        for n in range(4)
    ]
    batch = {"notifications": [_sms(recipient="+14155550110")]}
    refused_batch = gateway.post("/v1/notifications/batch", json=batch, headers=auth(busy))

    assert [response.status_code for response in responses] == [202, 202, 202, 429]
    refused = responses[-1]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "tenant" in refused.json()["detail"]
    assert refused_batch.json()["results"][0]["error"]["status"] == 429
    assert _count(session_factory, busy) == 3
    assert gateway.post("/v1/notifications", json=_sms(), headers=auth(other)).status_code == 202
