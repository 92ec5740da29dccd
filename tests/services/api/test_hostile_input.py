"""Crafted input is refused with a 4xx naming what is wrong, before anything is committed; never a 500."""

from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import Tenant
from tests.services.api.conftest import auth

PROBLEM_JSON = "application/problem+json"


def _email(**fields: Any) -> dict[str, Any]:
    return {
        "channel": "email",
        "recipient": "ada@example.com",
        "content": {"subject": "Hi", "body": "Hello"},
        **fields,
    }


def _nested(depth: int) -> dict[str, Any]:
    """An object `depth` levels deep: {"a": {"a": ... {}}}."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def _refused(response: httpx.Response, status: int = 422) -> list[dict[str, Any]]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    errors: list[dict[str, Any]] = response.json().get("errors", [])
    return errors


def _locations(response: httpx.Response) -> list[list[Any]]:
    return [error["loc"] for error in _refused(response)]


def _nothing_stored(client: TestClient, tenant: Tenant) -> None:
    listed = client.get("/v1/notifications", headers=auth(tenant))
    assert listed.status_code == 200, listed.text
    assert listed.json()["items"] == []


# --- dates ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"send_at": "9999-12-31T23:59:59Z"},
        {"send_at": "0001-01-01", "timezone": "Asia/Tokyo"},
        {"send_at": "9999-12-31T23:59:59Z", "timezone": "Pacific/Kiritimati", "respect_quiet_hours": False},
        {"send_at": "1999-12-31T23:59:59Z"},
        {"send_at": 1_700_000_000},
        {"send_at": "0.5"},
    ],
)
def test_a_send_at_outside_the_supported_years_or_not_iso_8601_is_refused(
    client: TestClient, tenant: Tenant, fields: dict[str, Any]
) -> None:
    response = client.post("/v1/notifications", json=_email(**fields), headers=auth(tenant))
    assert _locations(response) == [["body", "send_at"]]
    _nothing_stored(client, tenant)


def test_the_last_supported_send_at_in_the_furthest_ahead_zone_is_accepted_and_read_back(
    client: TestClient, tenant: Tenant
) -> None:
    request = _email(send_at="2100-12-31T23:59:59", timezone="Pacific/Kiritimati", respect_quiet_hours=False)
    response = client.post("/v1/notifications", json=request, headers=auth(tenant))
    assert response.status_code == 202, response.text
    assert response.json()["local_scheduled_time"] == "2100-12-31T23:59:59+14:00"
    listed = client.get("/v1/notifications", headers=auth(tenant))
    assert [item["id"] for item in listed.json()["items"]] == [response.json()["id"]]
    cancelled = client.post(f"/v1/notifications/{response.json()['id']}/cancel", headers=auth(tenant))
    assert cancelled.json()["status"] == "cancelled"


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/v1/analytics/summary", "until"),
        ("/v1/analytics/summary", "since"),
        ("/v1/notifications", "created_after"),
        ("/v1/notifications", "created_before"),
    ],
)
@pytest.mark.parametrize("value", ["9999-12-31T23:00-14:00", "0001-01-01T00:00+14:00", "0.5", "1700000000"])
def test_date_query_parameters_are_bounded_and_iso_8601_only(
    client: TestClient, tenant: Tenant, path: str, parameter: str, value: str
) -> None:
    response = client.get(path, params={parameter: value}, headers=auth(tenant))
    assert _locations(response) == [["query", parameter]]


@pytest.mark.parametrize("field", ["since", "until"])
def test_the_dead_letter_replay_window_is_bounded(client: TestClient, tenant: Tenant, field: str) -> None:
    body = {"channel": "email", field: "9999-12-31T23:59:59-14:00"}
    response = client.post("/v1/dead-letters/replay", json=body, headers=auth(tenant))
    assert _locations(response) == [["body", field]]


# --- free-form JSON ---------------------------------------------------------------------------------


def _send_with(field: str, value: Any) -> dict[str, Any]:
    if field == "content.data":
        return _email(content={"subject": "Hi", "body": "Hello", "data": value})
    if field == "variables":
        return {"channel": "email", "recipient": "ada@example.com", "template": "welcome", "variables": value}
    return _email(**{field: value})


@pytest.mark.parametrize("field", ["metadata", "variables", "content.data"])
@pytest.mark.parametrize(
    "value",
    [
        pytest.param(_nested(33), id="33-deep"),
        pytest.param({"blob": "x" * 70_000}, id="70-KB"),
    ],
)
def test_free_form_json_over_the_depth_or_size_limit_is_refused_naming_the_field(
    client: TestClient, tenant: Tenant, field: str, value: dict[str, Any]
) -> None:
    response = client.post("/v1/notifications", json=_send_with(field, value), headers=auth(tenant))
    assert _locations(response) == [["body", *field.split(".")]]
    _nothing_stored(client, tenant)


def test_metadata_nested_300_deep_is_refused_before_anything_is_stored(
    client: TestClient, tenant: Tenant
) -> None:
    response = client.post("/v1/notifications", json=_email(metadata=_nested(300)), headers=auth(tenant))
    [error] = _refused(response)
    assert error["type"] == "json_invalid"  # deeper than the parser goes (200 levels)
    _nothing_stored(client, tenant)


def test_metadata_at_the_depth_limit_is_stored_and_read_back(client: TestClient, tenant: Tenant) -> None:
    response = client.post("/v1/notifications", json=_email(metadata=_nested(32)), headers=auth(tenant))
    assert response.status_code == 202, response.text
    read = client.get(f"/v1/notifications/{response.json()['id']}", headers=auth(tenant))
    assert read.json()["metadata"] == _nested(32)


def test_template_preview_variables_are_bounded(client: TestClient, tenant: Tenant) -> None:
    body = {"variables": _nested(40)}
    response = client.post("/v1/templates/welcome/preview", json=body, headers=auth(tenant))
    assert _locations(response) == [["body", "variables"]]


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"a": "\\ud800"}', id="lone-high-surrogate"),
        pytest.param(b'{"a": "\\udc00x"}', id="lone-low-surrogate"),
        pytest.param(b'{"a": NaN}', id="NaN"),
        pytest.param(b'{"a": 1e999}', id="infinity"),
    ],
)
def test_metadata_postgresql_cannot_store_is_refused(client: TestClient, tenant: Tenant, raw: bytes) -> None:
    body = b'{"channel": "email", "recipient": "ada@example.com", "content": {"subject": "Hi", '
    body += b'"body": "Hello"}, "metadata": ' + raw + b"}"
    response = client.post(
        "/v1/notifications", content=body, headers={**auth(tenant), "Content-Type": "application/json"}
    )
    assert _refused(response)
    _nothing_stored(client, tenant)


@pytest.mark.parametrize(
    ("path", "body", "location"),
    [
        ("/v1/templates", {"name": "t", "channel": "sms", "body": "Hi", "html": "<p>\x00</p>"}, ["html"]),
        ("/v1/schedules", {"cron": "\x00", "notification": _email()}, ["cron"]),
        ("/v1/notifications", _email(metadata={"k": ["\x00"]}), ["metadata", "k", 0]),
    ],
)
def test_a_nul_character_anywhere_in_a_body_is_refused_naming_where(
    client: TestClient, tenant: Tenant, path: str, body: dict[str, Any], location: list[str | int]
) -> None:
    [error] = _refused(client.post(path, json=body, headers=auth(tenant)))
    assert error["loc"] == ["body", *location]
    assert "NUL" in error["msg"]


@pytest.mark.parametrize(
    ("method", "path", "parameter"),
    [
        ("GET", "/v1/templates/a%00b", ["path", "name"]),
        ("DELETE", "/v1/templates/a%00b", ["path", "name"]),
        ("GET", "/v1/notifications?user_id=%00", ["query", "user_id"]),
    ],
)
def test_a_nul_character_in_a_parameter_is_refused(
    client: TestClient, tenant: Tenant, method: str, path: str, parameter: list[str]
) -> None:
    assert _locations(client.request(method, path, headers=auth(tenant))) == [parameter]


# --- the edge: authentication first, every body parsed alike ---------------------------------------


def _operations(client: TestClient) -> list[tuple[str, str]]:
    paths: dict[str, dict[str, Any]] = client.get("/openapi.json").json()["paths"]
    return [
        (method.upper(), path.replace("{", "").replace("}", ""))  # any value fills a path parameter
        for path, operations in paths.items()
        if path.startswith("/v1/")
        for method in operations
    ]


def test_every_v1_operation_answers_401_without_a_key_whatever_the_body(client: TestClient) -> None:
    for method, path in _operations(client):
        for body in (b"{not json", b"\xff\xfe", b'{"a": "\\ud800"}'):
            response = client.request(
                method, path, content=body, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 401, (method, path, body, response.text)


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe{}", b"[" * 300 + b"]" * 300])
def test_a_body_that_is_not_json_or_not_utf_8_is_a_422(
    client: TestClient, tenant: Tenant, body: bytes
) -> None:
    response = client.post(
        "/v1/notifications", content=body, headers={**auth(tenant), "Content-Type": "application/json"}
    )
    [error] = _refused(response)
    assert error["type"] == "json_invalid"
    assert error["loc"] == ["body"]


def test_a_page_number_past_any_offset_is_refused(client: TestClient, tenant: Tenant) -> None:
    response = client.get("/v1/templates", params={"page": 2**63 - 1}, headers=auth(tenant))
    assert _locations(response) == [["query", "page"]]


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/v1/templates/welcome", {"GET", "PUT", "DELETE"}),
        ("/v1/notifications", {"GET", "POST"}),
        ("/v1/recipients/some/user", {"GET", "PUT", "DELETE"}),
    ],
)
@pytest.mark.parametrize("method", ["OPTIONS", "PATCH"])
def test_a_method_the_path_lacks_is_a_405_allowing_all_of_the_paths_methods(
    client: TestClient, tenant: Tenant, path: str, methods: set[str], method: str
) -> None:
    response = client.request(method, path, headers=auth(tenant))
    _refused(response, 405)
    assert set(response.headers["allow"].split(", ")) == methods


@pytest.mark.parametrize("method", ["GET", "DELETE", "OPTIONS"])
def test_a_literal_path_comes_before_a_template_that_matches_it(
    client: TestClient, tenant: Tenant, method: str
) -> None:
    # Not the notification whose id would be "batch" (a 422: not a UUID).
    response = client.request(method, "/v1/notifications/batch", headers=auth(tenant))
    _refused(response, 405)
    assert response.headers["allow"] == "POST"


def test_a_user_id_with_a_line_break_can_have_a_profile(client: TestClient, tenant: Tenant) -> None:
    path = "/v1/recipients/first%0Asecond"
    assert client.put(path, json={"email": "ada@example.com"}, headers=auth(tenant)).status_code == 201
    assert client.get(path, headers=auth(tenant)).json()["user_id"] == "first\nsecond"
