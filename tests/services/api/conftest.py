"""An in-process gateway (FastAPI TestClient, lifespan running) against the session's database and vhost."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient

from devtools.stack import Infrastructure
from pulse.settings import BrokerSettings, DatabaseSettings
from services.api.main import create_app
from services.api.settings import ApiSettings
from tests.conftest import Tenant


@contextmanager
def in_process_gateway(infrastructure: Infrastructure, **settings_: Any) -> Iterator[TestClient]:
    """The gateway with its default settings (quiet hours 22:00-08:00, 10 sends per minute) but for
    `settings_`."""
    settings = ApiSettings(
        database=DatabaseSettings(url=infrastructure.database_url),
        broker=BrokerSettings(url=infrastructure.broker_url),
        **settings_,
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def gateway(infrastructure: Infrastructure) -> Iterator[TestClient]:
    with in_process_gateway(infrastructure) as client:
        yield client


def auth(tenant: Tenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.api_key}"}


@pytest.fixture(scope="module")
def client(gateway: TestClient) -> TestClient:
    return gateway
