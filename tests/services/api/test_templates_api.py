"""The templates API through the real gateway (in-process, lifespan running) and the test database;
and `find_templates`, which sends use."""

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from pulse.db import transaction
from pulse.templates.service import find_templates
from pulse.tenants.service import Scope, create_api_key
from tests.conftest import Tenant
from tests.services.api.conftest import auth

PROBLEM_JSON = "application/problem+json"
PARTS = ("subject", "body", "html")
VARIABLES = {"first_name": "Ada", "amount": 1}
# 292 characters: each `set` made a string ten times as long as the one before (25 GB at the last).
MULTIPLYING = "\n".join(
    ["{% set s0 = 'x' * 250000 %}"]
    + [f"{{% set s{level} = " + " ~ ".join([f"s{level - 1}"] * 10) + " %}" for level in (1, 2, 3)]
)


def _welcome(name: str = "welcome", **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "channel": "email",
        "subject": "Welcome, {{ first_name }}",
        "body": "Hello {{ first_name }}, you owe {{ amount|currency('EUR') }}.",
        "html": "<p>Hello {{ first_name }}</p>",
        "variables": ["first_name", "amount"],
        "description": "Sent when an account is created.",
        **fields,
    }


def _create(client: TestClient, tenant: Tenant, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/templates", json=body, headers=auth(tenant))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    return body


def _assert_no_internals(text: str) -> None:
    for leak in ("Traceback", 'File "', "0x", "jinja2", "uid=", "<class"):
        assert leak not in text, text


# --- create, read, replace, delete ---------------------------------------------------------------


def test_a_template_is_created_read_replaced_and_deleted(client: TestClient, tenant: Tenant) -> None:
    created = _create(client, tenant, _welcome())
    assert created["name"] == "welcome"
    assert created["version"] == 1
    assert created["active"] is True
    assert created["variables"] == ["first_name", "amount"]
    assert created["priority"] is None

    read = client.get("/v1/templates/welcome", headers=auth(tenant))
    assert read.status_code == 200
    assert read.json() == created

    replacement = _welcome(body="Hi {{ first_name }}", html=None, variables=["first_name"], priority="high")
    replaced = client.put("/v1/templates/welcome", json=replacement, headers=auth(tenant))
    assert replaced.status_code == 200, replaced.text
    body = replaced.json()
    assert body["version"] == 2
    assert body["id"] == created["id"]
    assert (body["body"], body["html"], body["variables"]) == ("Hi {{ first_name }}", None, ["first_name"])
    assert body["priority"] == "high"
    assert body["updated_at"] > created["updated_at"]

    again = client.put("/v1/templates/welcome", json=replacement, headers=auth(tenant))
    assert again.json()["version"] == 3

    deleted = client.delete("/v1/templates/welcome", headers=auth(tenant))
    assert deleted.status_code == 204
    assert deleted.content == b""
    _assert_problem(client.get("/v1/templates/welcome", headers=auth(tenant)), 404)
    _assert_problem(client.delete("/v1/templates/welcome", headers=auth(tenant)), 404)


def test_a_duplicate_name_is_a_conflict(client: TestClient, tenant: Tenant) -> None:
    _create(client, tenant, _welcome())
    problem = _assert_problem(client.post("/v1/templates", json=_welcome(), headers=auth(tenant)), 409)
    assert "welcome" in problem["detail"]


def test_two_tenants_may_use_the_same_name(client: TestClient, make_tenant: Callable[..., Tenant]) -> None:
    first, second = make_tenant(), make_tenant()
    _create(client, first, _welcome())
    _create(client, second, _welcome(body="Second tenant's {{ first_name }} {{ amount }}"))
    assert client.get("/v1/templates/welcome", headers=auth(first)).json()["body"].startswith("Hello")


def test_another_tenants_template_is_not_found(
    client: TestClient, make_tenant: Callable[..., Tenant]
) -> None:
    owner, stranger = make_tenant(), make_tenant()
    _create(client, owner, _welcome())
    headers = auth(stranger)
    _assert_problem(client.get("/v1/templates/welcome", headers=headers), 404)
    _assert_problem(client.put("/v1/templates/welcome", json=_welcome(), headers=headers), 404)
    _assert_problem(client.delete("/v1/templates/welcome", headers=headers), 404)
    preview = {"variables": {"first_name": "Eve", "amount": 1}}
    _assert_problem(client.post("/v1/templates/welcome/preview", json=preview, headers=headers), 404)
    assert client.get("/v1/templates", headers=headers).json()["total"] == 0
    assert client.get("/v1/templates/welcome", headers=auth(owner)).status_code == 200


def test_replacing_an_unknown_template_is_not_found(client: TestClient, tenant: Tenant) -> None:
    _assert_problem(client.put("/v1/templates/nope", json=_welcome("nope"), headers=auth(tenant)), 404)


def test_a_template_cannot_be_renamed_by_put(client: TestClient, tenant: Tenant) -> None:
    _create(client, tenant, _welcome())
    response = client.put("/v1/templates/welcome", json=_welcome("farewell"), headers=auth(tenant))
    problem = _assert_problem(response, 422)
    assert problem["errors"][0]["loc"] == ["body", "name"]


def test_put_takes_the_name_from_the_path(client: TestClient, tenant: Tenant) -> None:
    _create(client, tenant, _welcome())
    replacement = _welcome(body="Hi {{ first_name }}", variables=["first_name"])
    del replacement["name"]

    response = client.put("/v1/templates/welcome", json=replacement, headers=auth(tenant))

    assert response.status_code == 200, response.text
    assert (response.json()["name"], response.json()["version"]) == ("welcome", 2)
    assert client.get("/v1/templates/welcome", headers=auth(tenant)).json()["body"] == "Hi {{ first_name }}"


# --- scopes --------------------------------------------------------------------------------------


def test_writing_templates_needs_the_admin_scope(
    client: TestClient, make_tenant: Callable[..., Tenant], session_factory: sessionmaker[Session]
) -> None:
    admin = make_tenant(scopes="admin,read")
    _create(client, admin, _welcome())
    # A key of the same tenant without `admin`, to tell the scope check from tenant isolation.
    with transaction(session_factory) as session:
        key = create_api_key(session, tenant_name=admin.name, scopes=[Scope.SEND, Scope.READ])
    headers = {"Authorization": f"Bearer {key}"}

    for response in (
        client.post("/v1/templates", json=_welcome("other"), headers=headers),
        client.put("/v1/templates/welcome", json=_welcome(), headers=headers),
        client.delete("/v1/templates/welcome", headers=headers),
    ):
        assert "admin" in _assert_problem(response, 403)["detail"]
    assert client.get("/v1/templates/welcome", headers=headers).json()["version"] == 1
    assert client.get("/v1/templates", headers=headers).json()["total"] == 1
    preview = client.post(
        "/v1/templates/welcome/preview",
        json={"variables": {"first_name": "Ada", "amount": 5}},
        headers=headers,
    )
    assert preview.status_code == 200, preview.text


def test_reading_templates_needs_the_read_scope(
    client: TestClient, make_tenant: Callable[..., Tenant]
) -> None:
    sender = make_tenant(scopes="send")
    _assert_problem(client.get("/v1/templates", headers=auth(sender)), 403)
    _assert_problem(client.get("/v1/templates/welcome", headers=auth(sender)), 403)
    _assert_problem(client.post("/v1/templates/welcome/preview", json={}, headers=auth(sender)), 403)
    _assert_problem(client.get("/v1/templates"), 401)


# --- listing -------------------------------------------------------------------------------------


def test_templates_are_listed_by_name_with_filters_and_pages(client: TestClient, tenant: Tenant) -> None:
    for name, channel, active in (
        ("e-receipt", "email", True),
        ("a-welcome", "email", True),
        ("c-otp", "sms", True),
        ("d-old-otp", "sms", False),
        ("b-digest", "email", False),
    ):
        body = {"name": name, "channel": channel, "subject": "S", "body": "B", "active": active}
        _create(client, tenant, body)

    def names(**params: Any) -> tuple[list[str], int]:
        response = client.get("/v1/templates", params=params, headers=auth(tenant))
        assert response.status_code == 200, response.text
        page = response.json()
        return [item["name"] for item in page["items"]], page["total"]

    assert names() == (["a-welcome", "b-digest", "c-otp", "d-old-otp", "e-receipt"], 5)
    assert names(channel="sms") == (["c-otp", "d-old-otp"], 2)
    assert names(active="false") == (["b-digest", "d-old-otp"], 2)
    assert names(channel="email", active="true") == (["a-welcome", "e-receipt"], 2)
    assert names(size=2) == (["a-welcome", "b-digest"], 5)
    assert names(size=2, page=2) == (["c-otp", "d-old-otp"], 5)
    assert names(size=2, page=3) == (["e-receipt"], 5)
    assert names(size=2, page=4) == ([], 5)
    page = client.get("/v1/templates", params={"size": 2, "page": 2}, headers=auth(tenant)).json()
    assert (page["page"], page["size"]) == (2, 2)


@pytest.mark.parametrize("params", [{"size": 201}, {"size": 0}, {"page": 0}, {"channel": "pigeon"}])
def test_bad_list_parameters_are_refused(client: TestClient, tenant: Tenant, params: dict[str, Any]) -> None:
    _assert_problem(client.get("/v1/templates", params=params, headers=auth(tenant)), 422)


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "location"),
    [
        ({"subject": None}, ["body", "subject"]),
        ({"name": "-starts-with-a-dash"}, ["body", "name"]),
        ({"name": "has space"}, ["body", "name"]),
        ({"name": "x" * 101}, ["body", "name"]),
        ({"variables": ["first-name"]}, ["body", "variables", 0]),
        ({"body": ""}, ["body", "body"]),
        ({"priority": "urgent"}, ["body", "priority"]),
        ({"colour": "blue"}, ["body", "colour"]),
    ],
)
def test_an_invalid_template_is_refused(
    client: TestClient, tenant: Tenant, change: dict[str, Any], location: list[Any]
) -> None:
    problem = _assert_problem(
        client.post("/v1/templates", json=_welcome(**change), headers=auth(tenant)), 422
    )
    assert location in [error["loc"] for error in problem["errors"]]


def test_a_syntax_error_is_refused_naming_the_part_and_line(client: TestClient, tenant: Tenant) -> None:
    response = client.post(
        "/v1/templates", json=_welcome(html="<p>\n{% for x in %}</p>"), headers=auth(tenant)
    )
    problem = _assert_problem(response, 422)
    assert problem["detail"].startswith("the html has a syntax error on line 2")
    assert problem["errors"][0]["loc"] == ["body", "html"]


def test_variables_are_deduplicated(client: TestClient, tenant: Tenant) -> None:
    created = _create(client, tenant, _welcome(variables=["first_name", "amount", "first_name"]))
    assert created["variables"] == ["first_name", "amount"]


# --- preview -------------------------------------------------------------------------------------


def test_preview_renders_every_part_for_a_locale(client: TestClient, tenant: Tenant) -> None:
    _create(client, tenant, _welcome(html="<p>Hello {{ first_name }}</p>"))
    response = client.post(
        "/v1/templates/welcome/preview",
        json={"variables": {"first_name": "<Zoé>", "amount": 1234.5}, "locale": "fr-FR"},
        headers=auth(tenant),
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "subject": "Welcome, <Zoé>",
        "body": "Hello <Zoé>, you owe 1\u202f234,50\xa0€.",
        "html": "<p>Hello &lt;Zoé&gt;</p>",
        "version": 1,
    }


def test_preview_names_the_missing_variables(client: TestClient, tenant: Tenant) -> None:
    _create(client, tenant, _welcome())
    response = client.post(
        "/v1/templates/welcome/preview", json={"variables": {"nickname": "Ada"}}, headers=auth(tenant)
    )
    problem = _assert_problem(response, 422)
    assert problem["detail"] == "missing variables: first_name, amount"
    assert problem["errors"] == [
        {"loc": ["body", "variables"], "msg": "missing variables: first_name, amount", "type": "value_error"}
    ]


def test_preview_refuses_an_unknown_locale(client: TestClient, tenant: Tenant) -> None:
    _create(client, tenant, _welcome())
    response = client.post(
        "/v1/templates/welcome/preview",
        json={"variables": {"first_name": "Ada", "amount": 1}, "locale": "elvish"},
        headers=auth(tenant),
    )
    assert ["body", "locale"] in [error["loc"] for error in _assert_problem(response, 422)["errors"]]


def test_preview_of_an_inactive_template_works(client: TestClient, tenant: Tenant) -> None:
    _create(client, tenant, _welcome(active=False))
    response = client.post(
        "/v1/templates/welcome/preview",
        json={"variables": {"first_name": "Ada", "amount": 2}},
        headers=auth(tenant),
    )
    assert response.json()["body"] == "Hello Ada, you owe €2.00."


# --- the sandbox through the API -------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    ],
)
def test_template_injection_is_refused_at_creation(client: TestClient, tenant: Tenant, payload: str) -> None:
    response = client.post("/v1/templates", json=_welcome(body=payload), headers=auth(tenant))
    problem = _assert_problem(response, 422)
    assert problem["detail"].startswith("the template tried an unsafe operation")
    assert problem["errors"][0]["loc"] == ["body", "body"]
    _assert_no_internals(response.text)
    _assert_problem(client.get("/v1/templates/welcome", headers=auth(tenant)), 404)


def test_template_injection_built_at_render_time_is_refused_at_preview(
    client: TestClient, tenant: Tenant
) -> None:
    payload = "{{ cycler|attr('__in' ~ 'it__')|attr('__glo' ~ 'bals__') }}{{ first_name }}{{ amount }}"
    _create(client, tenant, _welcome(body=payload))
    response = client.post(
        "/v1/templates/welcome/preview",
        json={"variables": {"first_name": "Ada", "amount": 1}},
        headers=auth(tenant),
    )
    problem = _assert_problem(response, 422)
    assert problem["detail"].startswith("the template tried an unsafe operation in the body: ")
    assert problem["errors"][0]["loc"] == ["template", "body"]
    _assert_no_internals(response.text)


def test_resource_exhaustion_is_refused_at_preview(client: TestClient, tenant: Tenant) -> None:
    _create(client, tenant, _welcome(body="{{ 'a' * 10**9 }}{{ first_name }}{{ amount }}"))
    response = client.post(
        "/v1/templates/welcome/preview",
        json={"variables": {"first_name": "Ada", "amount": 1}},
        headers=auth(tenant),
    )
    assert "exceed" in _assert_problem(response, 422)["detail"]


@pytest.mark.parametrize("part", PARTS)
@pytest.mark.parametrize(
    ("source", "detail"),
    [
        ("{{ " + "(" * 150 + "1" + ")" * 150 + " }}", "is nested too deeply to compile"),
        ("{{ first_name" + "|e" * 150 + " }}", "is nested too deeply to compile (more than 100 levels)"),
        ("{% for x in y %}" * 25 + "{% endfor %}" * 25, "is nested too deeply to compile"),
        (
            "{{ first_name|no_such_filter }}",
            "has a syntax error on line 1: No filter named 'no_such_filter'.",
        ),
    ],
)
def test_a_template_that_cannot_compile_is_refused_naming_the_part(
    client: TestClient, tenant: Tenant, part: str, source: str, detail: str
) -> None:
    response = client.post("/v1/templates", json=_welcome(**{part: source}), headers=auth(tenant))
    problem = _assert_problem(response, 422)
    assert problem["detail"].startswith(f"the {part} ")
    assert detail in problem["detail"]
    assert problem["errors"][0]["loc"] == ["body", part]
    _assert_no_internals(response.text)


@pytest.mark.parametrize("part", PARTS)
@pytest.mark.parametrize(
    ("source", "detail"),
    [
        ("{{ 'abc'|truncate(-5) }}", "failed to render: expected length >= 3, got -5"),
        ("{{ '%(a)s' % {} }}", "failed to render: no key 'a'"),
        ("{{ amount|format_number(locale=5) }}", "failed to render: unknown locale '5'"),
        ("{{ (1, 2)|xmlattr }}", "failed to render: 'tuple' object has no attribute 'items'"),
        ("a{{ '\\x00' }}b", "NUL characters (\\u0000) are not accepted in the rendered"),
        (MULTIPLYING, "went over a limit: the joined string would exceed 256 KiB"),
    ],
)
def test_a_render_error_is_a_422_naming_the_part_at_preview_and_at_send(
    client: TestClient, tenant: Tenant, part: str, source: str, detail: str
) -> None:
    _create(client, tenant, _welcome(**{part: source}))
    send = {"channel": "email", "recipient": "ada@example.com", "template": "welcome", "variables": VARIABLES}
    for response in (
        client.post("/v1/templates/welcome/preview", json={"variables": VARIABLES}, headers=auth(tenant)),
        client.post("/v1/notifications", json=send, headers=auth(tenant)),
    ):
        problem = _assert_problem(response, 422)
        assert detail in problem["detail"]
        assert f" {part}" in problem["detail"]
        assert problem["errors"][0]["loc"] == ["template", part]
        _assert_no_internals(response.text)


def test_a_hostile_template_is_refused_quickly_while_other_tenants_are_served(
    client: TestClient, make_tenant: Callable[..., Tenant]
) -> None:
    attacker, neighbour = make_tenant(), make_tenant()
    _create(client, attacker, _welcome(body=MULTIPLYING))
    # 50,000 upper() of a 250 KB string took 13.7 s within the loop budget (variables are at most 64 KiB).
    _create(
        client,
        attacker,
        _welcome("shout", body="{% for i in range(50000) %}{{ s.upper()|length }}{% endfor %}"),
    )
    _create(client, neighbour, _welcome())
    started = time.monotonic()
    for name, variables in (("welcome", VARIABLES), ("shout", {**VARIABLES, "s": "a" * 60_000})):
        response = client.post(
            f"/v1/templates/{name}/preview", json={"variables": variables}, headers=auth(attacker)
        )
        assert "went over a limit" in _assert_problem(response, 422)["detail"]
    assert time.monotonic() - started < 1
    served = client.post(
        "/v1/templates/welcome/preview", json={"variables": VARIABLES}, headers=auth(neighbour)
    )
    assert served.status_code == 200, served.text
    assert served.json()["body"] == "Hello Ada, you owe €1.00."


def test_the_api_is_documented(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths["/v1/templates"]) == {"get", "post"}
    assert set(paths["/v1/templates/{name}"]) == {"get", "put", "delete"}
    assert paths["/v1/templates/{name}/preview"]["post"]["description"]


# --- finding templates for sends -----------------------------------------------------------------


def test_find_templates_gets_many_names_in_one_query(
    client: TestClient, make_tenant: Callable[..., Tenant], session_factory: sessionmaker[Session]
) -> None:
    owner, stranger = make_tenant(), make_tenant()
    for name in ("welcome", "receipt", "reminder"):
        _create(client, owner, _welcome(name))
    _create(client, stranger, _welcome("invoice"))
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    with session_factory() as session:
        engine = session.get_bind()
        event.listen(engine, "before_cursor_execute", record)
        try:
            found = find_templates(session, owner.id, ["welcome", "receipt", "invoice", "absent", "welcome"])
        finally:
            event.remove(engine, "before_cursor_execute", record)
    assert sorted(found) == ["receipt", "welcome"]
    assert found["welcome"].version == 1
    assert len(statements) == 1
    with session_factory() as session:
        assert find_templates(session, owner.id, []) == {}
