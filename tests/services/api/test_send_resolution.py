"""Sends that name a template or a user: rendering at acceptance, recipient profiles, opt-outs and
priority routing, through the gateway."""

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from pulse.db import transaction
from pulse.tenants.service import configure_tenant
from tests.conftest import Tenant
from tests.services.api.conftest import auth

RECEIPT = {
    "name": "receipt",
    "channel": "email",
    "subject": "Receipt {{ order_id }}",
    "body": "Hi {{ name }}, you paid {{ total | currency('EUR') }}.",
    "html": "<p>Hi {{ name }}</p>",
    "variables": ["name", "order_id", "total"],
}


@pytest.fixture
def client(gateway: TestClient, tenant: Tenant) -> TestClient:
    gateway.headers.update(auth(tenant))
    return gateway


def _template(client: TestClient, **fields: Any) -> dict[str, Any]:
    response = client.post("/v1/templates", json={**RECEIPT, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _send(client: TestClient, body: dict[str, Any], status: int = 202) -> dict[str, Any]:
    response = client.post("/v1/notifications", json=body)
    assert response.status_code == status, response.text
    result: dict[str, Any] = response.json()
    return result


def _receipt(**fields: Any) -> dict[str, Any]:
    variables = {"name": "Ada <3", "order_id": "A-1", "total": 12.5}
    return {
        "channel": "email",
        "recipient": "ada@example.com",
        "template": "receipt",
        "variables": variables,
        **fields,
    }


def test_a_send_naming_a_template_stores_the_rendered_content(client: TestClient) -> None:
    _template(client)

    sent = _send(client, _receipt())
    # The template changes afterwards; what was sent stays as sent.
    client.put("/v1/templates/receipt", json={**RECEIPT, "subject": "Changed"})
    stored = client.get(f"/v1/notifications/{sent['id']}").json()

    assert stored["template"] == "receipt"
    assert stored["content"]["subject"] == "Receipt A-1"
    assert stored["content"]["body"] == "Hi Ada <3, you paid €12.50."
    assert stored["content"]["html"] == "<p>Hi Ada &lt;3</p>"
    assert stored["priority"] == "normal"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"variables": {"name": "Ada"}}, ["order_id", "total"]),
        ({"template": "nope"}, ["nope"]),
        ({"channel": "sms", "recipient": "+14155550100"}, ["receipt", "email"]),
    ],
)
def test_a_template_send_that_cannot_render_is_a_422_naming_what_is_wrong(
    client: TestClient, change: dict[str, Any], named: list[str]
) -> None:
    _template(client)

    problem = _send(client, _receipt(**change), status=422)

    assert all(name in problem["detail"] for name in named), problem["detail"]
    assert problem["errors"][0]["loc"][0] == "body"


def test_an_inactive_template_cannot_be_sent(client: TestClient) -> None:
    _template(client, active=False)

    problem = _send(client, _receipt(), status=422)

    assert "inactive" in problem["detail"]


def test_content_and_template_are_alternatives(client: TestClient) -> None:
    both = {**_receipt(), "content": {"subject": "s", "body": "b"}}
    neither = {"channel": "email", "recipient": "ada@example.com"}
    stray_variables = {
        "channel": "sms",
        "recipient": "+14155550100",
        "content": {"body": "b"},
        "variables": {"a": 1},
    }

    for body in (both, neither, stray_variables):
        _send(client, body, status=422)


def test_otp_templates_route_critical_unless_a_priority_is_given(client: TestClient) -> None:
    _template(client, name="login-otp", subject="Code", body="{{ code }}", html=None, variables=["code"])
    _template(client, name="digest", subject="Digest", body="news", html=None, variables=[], priority="low")
    otp = {
        "channel": "email",
        "recipient": "ada@example.com",
        "template": "login-otp",
        "variables": {"code": "1"},
    }
    digest = {"channel": "email", "recipient": "ada@example.com", "template": "digest"}

    assert _send(client, otp)["priority"] == "critical"
    assert _send(client, {**otp, "priority": "high"})["priority"] == "high"
    assert _send(client, digest)["priority"] == "low"
    assert _send(client, {**digest, "priority": "normal"})["priority"] == "normal"


def test_the_tenant_default_priority_applies_when_nothing_else_decides(
    gateway: TestClient, make_tenant: Callable[..., Tenant], session_factory: sessionmaker[Session]
) -> None:
    tenant = make_tenant()
    with transaction(session_factory) as session:
        configure_tenant(session, name=tenant.name, default_priority="high")
    body = {"channel": "sms", "recipient": "+14155550100", "content": {"body": "b"}}

    sent = gateway.post("/v1/notifications", json=body, headers=auth(tenant))

    assert sent.json()["priority"] == "high"


def _profile(client: TestClient, user_id: str, **fields: Any) -> None:
    profile = {"email": "grace@example.com", "phone": "+442071838750", "push_tokens": ["token-1", "token-2"]}
    response = client.put(f"/v1/recipients/{user_id}", json={**profile, **fields})
    assert response.status_code in (200, 201), response.text


def test_a_send_to_a_user_takes_the_address_from_their_profile(client: TestClient) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    _profile(client, user)
    content = {"subject": "s", "body": "b"}

    assert (
        _send(client, {"channel": "email", "user_id": user, "content": content})["recipient"]
        == "grace@example.com"
    )
    assert (
        _send(client, {"channel": "sms", "user_id": user, "content": content})["recipient"] == "+442071838750"
    )
    assert _send(client, {"channel": "push", "user_id": user, "content": content})["recipient"] == "token-1"
    # An explicit recipient wins over the profile's.
    explicit = {"channel": "email", "user_id": user, "recipient": "other@example.com", "content": content}
    assert _send(client, explicit)["recipient"] == "other@example.com"


def test_a_send_to_a_user_without_an_address_for_the_channel_is_a_422(client: TestClient) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    _profile(client, user, phone=None)

    no_phone = _send(client, {"channel": "sms", "user_id": user, "content": {"body": "b"}}, status=422)
    no_profile = _send(client, {"channel": "sms", "user_id": "nobody", "content": {"body": "b"}}, status=422)

    for problem in (no_phone, no_profile):
        assert problem["errors"][0]["loc"] == ["body", "recipient"]


def test_an_opted_out_channel_is_refused_except_for_critical_notifications(client: TestClient) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    _profile(client, user, preferences={"sms": False, "email": True})
    sms = {"channel": "sms", "user_id": user, "content": {"body": "b"}}

    refused = _send(client, sms, status=422)
    critical = _send(client, {**sms, "priority": "critical"})
    email = _send(client, {"channel": "email", "user_id": user, "content": {"subject": "s", "body": "b"}})

    assert "opted out of sms" in refused["detail"]
    assert refused["errors"][0]["loc"] == ["body", "user_id"]
    assert critical["status"] == "queued"
    assert email["status"] == "queued"


def test_the_profile_time_zone_and_quiet_hours_apply(client: TestClient) -> None:
    now = datetime.now(UTC)
    # Quiet hours that cover the current UTC hour (the whole day but the hour before), and none.
    quiet = f"{now.hour:02d}:00-{(now.hour + 23) % 24:02d}:00"
    night_owl, always_awake = f"owl-{uuid.uuid4().hex[:8]}", f"awake-{uuid.uuid4().hex[:8]}"
    _profile(client, night_owl, timezone="UTC", quiet_hours=quiet)
    _profile(client, always_awake, timezone="Asia/Tokyo", quiet_hours="off")
    sms = {"channel": "sms", "content": {"body": "b"}}

    deferred = _send(client, {**sms, "user_id": night_owl})
    immediate = _send(client, {**sms, "user_id": always_awake})

    assert deferred["status"] == "scheduled" and deferred["deferred_reason"] == "quiet_hours"
    assert immediate["status"] == "queued" and immediate["timezone"] == "Asia/Tokyo"


def test_the_profile_locale_formats_template_values(client: TestClient) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    _profile(client, user, locale="de_DE")
    _template(client)

    sent = _send(client, {**_receipt(), "recipient": None, "user_id": user})

    assert sent["content"]["body"] == "Hi Ada <3, you paid 12,50\xa0€."


def test_nul_characters_are_refused_with_a_422_naming_where(client: TestClient) -> None:
    body = {
        "channel": "sms",
        "recipient": "+14155550100",
        "content": {"body": "b"},
        "metadata": {"ref": "a\x00b"},
    }

    problem = _send(client, body, status=422)

    assert "metadata.ref" in problem["errors"][0]["msg"]
