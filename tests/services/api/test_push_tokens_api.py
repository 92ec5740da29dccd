"""Device tokens FCM refused, as the gateway sees them: refused for the tenant that sent to them only."""

import secrets
from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from pulse.recipients.push_tokens import invalid_token_recorder
from tests.conftest import Tenant
from tests.services.api.conftest import auth


def test_a_token_fcm_refused_is_refused_for_its_tenant_only(
    gateway: TestClient, make_tenant: Callable[..., Tenant], session_factory: sessionmaker[Session]
) -> None:
    reporter, other = make_tenant(), make_tenant()
    token = f"dead-{secrets.token_hex(8)}"
    # What the push worker does when FCM answers 404 UNREGISTERED to one of the reporter's sends.
    invalid_token_recorder(session_factory)(reporter.id, token, "UNREGISTERED")
    push = {"channel": "push", "recipient": token, "content": {"body": "Hi"}}

    refused = gateway.post("/v1/notifications", json=push, headers=auth(reporter))
    accepted = gateway.post("/v1/notifications", json=push, headers=auth(other))

    assert refused.status_code == 422, refused.text
    assert "device token was reported invalid by FCM" in refused.json()["detail"]
    # Nothing about the reporter's token leaks to another tenant.
    assert accepted.status_code == 202, accepted.text
