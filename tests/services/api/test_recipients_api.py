"""PUT/GET/DELETE /v1/recipients/{user_id} through the gateway in-process (FastAPI TestClient, lifespan
running) against the test database."""

from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import Tenant
from tests.services.api.conftest import auth

PROBLEM_JSON = "application/problem+json"

ADA = {
    "email": "Ada@EXAMPLE.com",
    "phone": "+1 (415) 555-0100",
    "push_tokens": ["phone-token", "tablet-token", "phone-token"],
    "timezone": "Europe/Paris",
    "quiet_hours": "22:00 - 07:30",
    "locale": "fr-FR",
    "preferences": {"sms": False, "email": True},
}


def _problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert (body["status"], bool(body["title"]), bool(body["detail"])) == (status, True, True)
    return body


def test_a_put_creates_the_profile_normalised_and_a_get_reads_it_back(
    client: TestClient, tenant: Tenant
) -> None:
    response = client.put("/v1/recipients/ada", json=ADA, headers=auth(tenant))

    assert response.status_code == 201, response.text
    body = response.json()
    assert {name: value for name, value in body.items() if name not in ("created_at", "updated_at")} == {
        "user_id": "ada",
        "email": "Ada@example.com",
        "phone": "+14155550100",
        "push_tokens": ["phone-token", "tablet-token"],
        "timezone": "Europe/Paris",
        "quiet_hours": "22:00-07:30",
        "locale": "fr_FR",
        "preferences": {"sms": False, "email": True},
    }
    assert client.get("/v1/recipients/ada", headers=auth(tenant)).json() == body


def test_a_second_put_replaces_the_whole_profile(client: TestClient, tenant: Tenant) -> None:
    created = client.put("/v1/recipients/ada", json=ADA, headers=auth(tenant)).json()

    response = client.put("/v1/recipients/ada", json={"phone": "+33 6 12 34 56 78"}, headers=auth(tenant))

    assert response.status_code == 200, response.text
    replaced = response.json()
    # Fields the second body left out are cleared, not kept from the first.
    assert replaced | {"updated_at": None} == {
        "user_id": "ada",
        "email": None,
        "phone": "+33612345678",
        "push_tokens": [],
        "timezone": None,
        "quiet_hours": None,
        "locale": None,
        "preferences": {},
        "created_at": created["created_at"],
        "updated_at": None,
    }
    assert datetime.fromisoformat(replaced["updated_at"]) > datetime.fromisoformat(created["updated_at"])
    assert client.get("/v1/recipients/ada", headers=auth(tenant)).json() == replaced


def test_a_deleted_profile_is_gone(client: TestClient, tenant: Tenant) -> None:
    client.put("/v1/recipients/ada", json=ADA, headers=auth(tenant))

    response = client.delete("/v1/recipients/ada", headers=auth(tenant))

    assert response.status_code == 204
    assert response.content == b""
    _problem(client.get("/v1/recipients/ada", headers=auth(tenant)), 404)
    _problem(client.delete("/v1/recipients/ada", headers=auth(tenant)), 404)


def test_an_unknown_user_has_no_profile(client: TestClient, tenant: Tenant) -> None:
    body = _problem(client.get("/v1/recipients/nobody", headers=auth(tenant)), 404)
    assert "nobody" in body["detail"]


def test_another_tenants_profile_is_not_found_and_untouched(
    client: TestClient, make_tenant: Callable[..., Tenant]
) -> None:
    owner, stranger = make_tenant(), make_tenant()
    client.put("/v1/recipients/ada", json=ADA, headers=auth(owner))

    _problem(client.get("/v1/recipients/ada", headers=auth(stranger)), 404)
    _problem(client.delete("/v1/recipients/ada", headers=auth(stranger)), 404)
    # The same user id is a different person in another tenant.
    response = client.put("/v1/recipients/ada", json={"email": "other@example.org"}, headers=auth(stranger))
    assert response.status_code == 201, response.text
    assert client.get("/v1/recipients/ada", headers=auth(owner)).json()["email"] == "Ada@example.com"


def test_user_ids_may_contain_slashes_and_other_characters(client: TestClient, tenant: Tenant) -> None:
    for user_id, path in (("team/ada", "team/ada"), ("a/b c|d", "a%2Fb%20c%7Cd")):
        response = client.put(f"/v1/recipients/{path}", json={}, headers=auth(tenant))
        assert response.status_code == 201, response.text
        assert response.json()["user_id"] == user_id
        assert client.get(f"/v1/recipients/{path}", headers=auth(tenant)).json()["user_id"] == user_id


@pytest.mark.parametrize("path", ["u" * 256, "a%00b"], ids=["over-255-characters", "nul"])
def test_a_user_id_the_database_cannot_key_is_a_422_problem(
    client: TestClient, tenant: Tenant, path: str
) -> None:
    body = _problem(client.put(f"/v1/recipients/{path}", json={}, headers=auth(tenant)), 422)
    assert [error["loc"] for error in body["errors"]] == [["path", "user_id"]]


def test_a_user_id_of_255_characters_is_fine(client: TestClient, tenant: Tenant) -> None:
    assert client.put(f"/v1/recipients/{'u' * 255}", json={}, headers=auth(tenant)).status_code == 201


def test_writes_need_the_send_scope_and_reads_the_read_scope(
    client: TestClient, make_tenant: Callable[..., Tenant]
) -> None:
    reader, sender = make_tenant(scopes="read"), make_tenant(scopes="send")
    assert "send" in _problem(client.put("/v1/recipients/ada", json=ADA, headers=auth(reader)), 403)["detail"]
    _problem(client.delete("/v1/recipients/ada", headers=auth(reader)), 403)
    assert client.put("/v1/recipients/ada", json=ADA, headers=auth(sender)).status_code == 201
    assert "read" in _problem(client.get("/v1/recipients/ada", headers=auth(sender)), 403)["detail"]


def test_a_request_without_a_key_is_a_401_problem(client: TestClient) -> None:
    _problem(client.get("/v1/recipients/ada"), 401)


@pytest.mark.parametrize(
    ("change", "loc", "message"),
    [
        pytest.param({"email": "not-an-email"}, ["body", "email"], "valid email address", id="email"),
        pytest.param({"phone": "4155550100"}, ["body", "phone"], "phone number", id="phone"),
        pytest.param({"push_tokens": ["a b"]}, ["body", "push_tokens", 0], "device token", id="push-token"),
        pytest.param({"push_tokens": ["a\x00b"]}, ["body", "push_tokens", 0], "NUL", id="push-token-nul"),
        pytest.param({"timezone": "Mars/Olympus"}, ["body", "timezone"], "unknown time zone", id="timezone"),
        pytest.param({"quiet_hours": "late"}, ["body", "quiet_hours"], "22:00-08:00", id="quiet-hours"),
        pytest.param({"locale": "xx-YY"}, ["body", "locale"], "unknown locale", id="locale"),
        pytest.param(
            {"preferences": {"pigeon": False}},
            ["body", "preferences"],
            "unknown channel 'pigeon'",
            id="preference-channel",
        ),
        pytest.param({"nickname": "Ada"}, ["body", "nickname"], "Extra inputs", id="unknown-field"),
    ],
)
def test_invalid_fields_are_a_422_problem_naming_the_field(
    client: TestClient, tenant: Tenant, change: dict[str, Any], loc: list[str | int], message: str
) -> None:
    response = client.put("/v1/recipients/ada", json={**ADA, **change}, headers=auth(tenant))

    [error] = _problem(response, 422)["errors"]
    assert error["loc"] == loc
    assert message in error["msg"]
    _problem(client.get("/v1/recipients/ada", headers=auth(tenant)), 404)  # Nothing was stored.


def test_the_openapi_schema_documents_the_profile_with_an_example(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    operations = schema["paths"]["/v1/recipients/{user_id}"]
    assert set(operations) == {"put", "get", "delete"}
    assert {"200", "201", "403", "422"} <= set(operations["put"]["responses"])
    assert schema["components"]["schemas"]["RecipientIn"]["examples"][0]["preferences"] == {
        "sms": False,
        "whatsapp": False,
    }
