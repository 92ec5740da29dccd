"""GET /v1/presence/{user_id} reads the connection registry, and the end-user routes (only they) answer
browsers on the configured origins (CORS)."""

from collections.abc import Callable
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from pulse.db import transaction
from pulse.inapp.tokens import EndUser
from pulse.realtime import connections
from tests.conftest import Tenant
from tests.services.api.conftest import auth


def _connect(factory: sessionmaker[Session], user: EndUser, process: str) -> None:
    with transaction(factory) as session:
        assert connections.register(
            session, user, process_id=process, limit=5, stale_after=timedelta(seconds=30)
        )


def test_presence_counts_the_fresh_connections_of_the_tenant_s_user(
    client: TestClient, session_factory: sessionmaker[Session], make_tenant: Callable[..., Tenant]
) -> None:
    tenant, other = make_tenant("read"), make_tenant("read")
    user = EndUser(tenant_id=tenant.id, user_id="ada/öne\nline")
    assert client.get("/v1/presence/ada%2F%C3%B6ne%0Aline", headers=auth(tenant)).json() == {
        "online": False,
        "connections": 0,
        "last_seen_at": None,
    }

    _connect(session_factory, user, "process-a")
    _connect(session_factory, user, "process-b")
    _connect(session_factory, user, "killed")
    with transaction(session_factory) as session:
        session.execute(
            text(
                "UPDATE realtime_connections SET last_seen_at = now() - interval '1 minute'"
                " WHERE process_id = 'killed'"
            )
        )
    response = client.get("/v1/presence/ada%2F%C3%B6ne%0Aline", headers=auth(tenant))
    assert response.status_code == 200
    body = response.json()
    assert body["online"] is True and body["connections"] == 2 and body["last_seen_at"]

    # Another tenant's user of the same id is someone else.
    assert client.get("/v1/presence/ada%2F%C3%B6ne%0Aline", headers=auth(other)).json()["online"] is False


def test_presence_needs_the_read_scope(client: TestClient, make_tenant: Callable[..., Tenant]) -> None:
    assert client.get("/v1/presence/u-1").status_code == 401
    assert client.get("/v1/presence/u-1", headers=auth(make_tenant("send"))).status_code == 403
    assert client.get("/v1/presence/" + "x" * 256, headers=auth(make_tenant("read"))).status_code == 422


def test_only_the_end_user_routes_answer_the_configured_origins(client: TestClient) -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    demo = {"Origin": "http://localhost:8010", **preflight}

    for path in ("/v1/auth/token", "/v1/inbox/unread-count", "/v1/inbox/0b7c/read"):
        response = client.options(path, headers=demo)
        assert response.status_code == 200, path
        assert response.headers["access-control-allow-origin"] == "http://localhost:8010"
        assert "authorization" in response.headers["access-control-allow-headers"].lower()

    refused = client.options("/v1/inbox", headers={**demo, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in refused.headers
    tenant_route = client.options("/v1/notifications", headers=demo)
    assert "access-control-allow-origin" not in tenant_route.headers
    # A plain request from the page gets the header too (here: refused for want of a token).
    answer = client.get("/v1/inbox", headers={"Origin": "http://localhost:8010"})
    assert answer.status_code == 401
    assert answer.headers["access-control-allow-origin"] == "http://localhost:8010"
