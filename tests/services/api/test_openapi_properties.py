"""Property-based tests generated from the gateway's own OpenAPI (schemathesis): every operation, called
with generated input and a key that has every scope, never answers a server error, and answers as
its schema says: a declared status code, content type and headers, and a body matching the declared
schema (problem+json for errors), which is what generated clients rely on. The gateway runs in-process
on a database and vhost of its own, so the operations that mutate (cancel, replay, rotate the secret,
delete) touch nothing another test relies on."""

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.orm import Session, sessionmaker
from starlette import types as asgi

from devtools.stack import Infrastructure
from pulse.db import transaction
from pulse.settings import BrokerSettings, DatabaseSettings
from pulse.tenants.service import Scope, create_api_key, create_tenant
from services.api.main import create_app
from services.api.settings import ApiSettings


class _GatewayUnderTest:
    """The ASGI app schemathesis calls (its lifespan too): the gateway of the `fuzzed_gateway`
    fixture, which exists only once the private database does."""

    app: asgi.ASGIApp | None = None

    async def __call__(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        assert self.app is not None, "the test needs the `fuzzed_gateway` fixture"
        await self.app(scope, receive, send)


GATEWAY = _GatewayUnderTest()


@pytest.fixture(scope="module")
def fuzzed_gateway(private: Infrastructure) -> Iterator[None]:
    GATEWAY.app = create_app(
        ApiSettings(
            database=DatabaseSettings(url=private.database_url),
            broker=BrokerSettings(url=private.broker_url),
        )
    )
    yield
    GATEWAY.app = None


@pytest.fixture(scope="module")
def api_key(factory: sessionmaker[Session]) -> str:
    with transaction(factory) as session:
        create_tenant(session, name="fuzzed")
        return create_api_key(session, tenant_name="fuzzed", scopes=list(Scope))


# Read from an app that is never started: the schema does not depend on the settings.
schema = schemathesis.openapi.from_dict(create_app().openapi())
schema.app = GATEWAY

# What every answer must satisfy. Not checked: valid by the schema is not always enough to be
# accepted (a template must compile, a locale exist), nor is invalid always refused (FastAPI reads the
# last of repeated query parameters, and a best-effort batch is accepted with its invalid items
# reported one by one): positive_data_acceptance, negative_data_rejection.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_requests_never_meet_a_server_error(
    case: schemathesis.Case, fuzzed_gateway: None, api_key: str
) -> None:
    # /readyz answers 503 by design while a dependency is slow or down (as on a busy machine).
    checks = [check for check in CHECKS if case.path != "/readyz" or check is not not_a_server_error]
    case.call_and_validate(headers={"Authorization": f"Bearer {api_key}"}, checks=checks)
