"""Test fixtures: every run gets its own PostgreSQL database and RabbitMQ vhost, removed afterwards.

`stack` starts the real services (sandbox, api, the channel workers, scheduler) as processes against them.
"""

import json
import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kombu import Connection
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from devtools.stack import Infrastructure, Stack, Timeout, isolated_infrastructure, running_stack
from devtools.stack import wait_until as stack_wait_until
from pulse.db import make_session_factory, transaction
from pulse.messaging.celery_app import make_celery
from pulse.messaging.publisher import ConfirmedPublisher
from pulse.settings import BrokerSettings
from pulse.tenants.service import Scope, create_api_key, create_tenant
from pulse.vocabulary import Priority

# The deployment default (22:00-08:00 UTC) would defer every test notification sent at night;
# quiet-hours tests give their tenant a window of their own.
os.environ.setdefault("PULSE_QUIET_HOURS", "off")

# The sms worker's accounts in the `stack`: the default sandbox SID, and a secondary to fail over to.
PRIMARY_TWILIO_ACCOUNT = "AC" + "0" * 32
SECONDARY_TWILIO_ACCOUNT = "AC" + "1" * 32
# The push worker's Firebase projects in the `stack`: the default sandbox project, and a secondary.
PRIMARY_FCM_PROJECT = "pulse-sandbox"
SECONDARY_FCM_PROJECT = "pulse-secondary"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Chaos tests restart RabbitMQ and PostgreSQL under everyone's feet: they run last."""
    items.sort(key=lambda item: item.get_closest_marker("chaos") is not None)


@pytest.fixture(scope="session")
def infrastructure() -> Iterator[Infrastructure]:
    with isolated_infrastructure() as infrastructure:
        yield infrastructure


def wait_for_status(client: Any, notification_id: str, status: str, timeout: float = 30) -> dict[str, Any]:
    """Poll GET /v1/notifications/{id} until the notification has `status`; return it."""

    def reached() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/v1/notifications/{notification_id}").json()
        return body if body["status"] == status else None

    found: dict[str, Any] = wait_until(
        reached, timeout=timeout, what=f"notification {notification_id} to be {status}"
    )
    return found


def wait_until(condition: Callable[[], Any], *, timeout: float = 30.0, what: str = "") -> Any:
    """Poll `condition` until it returns something truthy; fail the test at the deadline."""
    try:
        return stack_wait_until(condition, timeout=timeout, what=what)
    except Timeout as timeout_error:
        pytest.fail(str(timeout_error))


def drain(broker_url: str, queue: str) -> list[str]:
    """Notification ids of every message in the queue, consuming them."""
    ids = []
    with Connection(broker_url) as connection:
        channel = connection.channel()
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            ids.extend(json.loads(message.body)[0])
        channel.close()
    return ids


# --- a private database and vhost per test module --------------------------------------------------
# For tests that count every row or message: the session's `stack` (its scheduler and worker) shares
# the session infrastructure and would take part.


@pytest.fixture(scope="module")
def private() -> Iterator[Infrastructure]:
    with isolated_infrastructure("pulse_test_private") as infrastructure:
        yield infrastructure


@pytest.fixture(scope="module")
def factory(private: Infrastructure) -> Iterator[sessionmaker[Session]]:
    engine = create_engine(private.database_url, pool_pre_ping=True)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def publisher(private: Infrastructure) -> Iterator[ConfirmedPublisher]:
    app = make_celery("pulse-tests-private", BrokerSettings(url=private.broker_url))
    publisher = ConfirmedPublisher(app, confirm_timeout=10)
    yield publisher
    publisher.close()
    app.close()


@pytest.fixture(scope="session")
def engine(infrastructure: Infrastructure) -> Iterator[Engine]:
    # Pre-ping: the chaos test restarts PostgreSQL, and teardown still needs a working connection.
    engine = create_engine(infrastructure.database_url, pool_pre_ping=True)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work is rolled back at the end of the test."""
    with session_factory() as session, session.begin():
        yield session
        session.rollback()


@dataclass(frozen=True)
class Tenant:
    id: uuid.UUID
    name: str
    api_key: str


def new_tenant(session_factory: sessionmaker[Session], scopes: str = "send,read,admin") -> Tenant:
    """A tenant with an API key of these scopes, in the database of `session_factory`."""
    name = f"tenant-{secrets.token_hex(4)}"
    with transaction(session_factory) as session:
        tenant = create_tenant(session, name=name)
        key = create_api_key(session, tenant_name=name, scopes=[Scope(s) for s in scopes.split(",")])
    return Tenant(id=tenant.id, name=name, api_key=key)


@pytest.fixture(scope="session")
def make_tenant(session_factory: sessionmaker[Session]) -> Callable[..., Tenant]:
    def make(scopes: str = "send,read,admin") -> Tenant:
        return new_tenant(session_factory, scopes)

    return make


@pytest.fixture
def tenant(make_tenant: Callable[..., Tenant]) -> Tenant:
    return make_tenant()


@pytest.fixture(scope="session")
def task_publisher(infrastructure: Infrastructure) -> Iterator[ConfirmedPublisher]:
    """Publishes tasks straight to the shared stack's broker, as the gateway would."""
    app = make_celery("pulse-tests", BrokerSettings(url=infrastructure.broker_url))
    publisher = ConfirmedPublisher(app, confirm_timeout=10)
    yield publisher
    publisher.close()
    app.close()


@pytest.fixture(scope="session")
def stack(infrastructure: Infrastructure, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The real services, configured for quick tests (short claim lease, fast scheduler ticks)."""
    quick = {
        "PULSE_EMAIL_WORKER_CONCURRENCY": "4",
        "PULSE_EMAIL_WORKER_CLAIM_LEASE_SECONDS": "2",
        "PULSE_EMAIL_WORKER_CIRCUIT_FAILURES": "3",
        "PULSE_EMAIL_WORKER_CIRCUIT_COOLDOWN_SECONDS": "2",
        "PULSE_SMS_WORKER_CONCURRENCY": "4",
        "PULSE_SMS_WORKER_CLAIM_LEASE_SECONDS": "2",
        "PULSE_SMS_WORKER_CIRCUIT_FAILURES": "3",
        "PULSE_SMS_WORKER_CIRCUIT_COOLDOWN_SECONDS": "2",
        "PULSE_PUSH_WORKER_CONCURRENCY": "4",
        "PULSE_PUSH_WORKER_CLAIM_LEASE_SECONDS": "2",
        "PULSE_PUSH_WORKER_CIRCUIT_FAILURES": "3",
        "PULSE_PUSH_WORKER_CIRCUIT_COOLDOWN_SECONDS": "2",
        "PULSE_WEBHOOK_WORKER_CONCURRENCY": "4",
        "PULSE_WEBHOOK_WORKER_CLAIM_LEASE_SECONDS": "2",
        "PULSE_WEBHOOK_WORKER_CIRCUIT_FAILURES": "3",
        "PULSE_WEBHOOK_WORKER_CIRCUIT_COOLDOWN_SECONDS": "2",
        "PULSE_INAPP_WORKER_CONCURRENCY": "4",
        "PULSE_INAPP_WORKER_CLAIM_LEASE_SECONDS": "2",
        # A rotated secret signs the very next delivery.
        "PULSE_WEBHOOK_SECRET_CACHE_SECONDS": "0",
        # Well under the 2 s claim lease, as the 10 s default is under the 60 s one.
        "PULSE_WEBHOOK_DEADLINE_SECONDS": "1",
        "PULSE_SCHEDULER_TICK_SECONDS": "0.2",
        "PULSE_SCHEDULER_DEAD_LETTER_RECONCILE_SECONDS": "0.5",
        "PULSE_SCHEDULER_RETRY_OVERDUE_SECONDS": "3",
        "PULSE_PUBLISH_GRACE_SECONDS": "1",
        # Tests send many notifications to few addresses; the rate-limit tests set their own limits.
        "PULSE_RATE_LIMIT": "100000",
        # Retries a second apart, so that retry tests take seconds.
        **{f"PULSE_RETRY_{priority.upper()}_BASE_SECONDS": "1" for priority in Priority},
        **{f"PULSE_RETRY_{priority.upper()}_CAP_SECONDS": "1" for priority in Priority},
    }

    def env(stack: Stack) -> dict[str, str]:
        # A second Twilio account, SMTP relay and FCM project, on the same sandbox, to fail over to.
        secondary = {
            "PULSE_TWILIO_SECONDARY_BASE_URL": stack.sandbox_url,
            "PULSE_TWILIO_SECONDARY_ACCOUNT_SID": SECONDARY_TWILIO_ACCOUNT,
            "PULSE_SMTP_SECONDARY_HOST": "127.0.0.1",
            "PULSE_SMTP_SECONDARY_PORT": str(stack.ports["sandbox_smtp_secondary"]),
            "PULSE_FCM_SECONDARY_BASE_URL": stack.sandbox_url,
            "PULSE_FCM_SECONDARY_PROJECT_ID": SECONDARY_FCM_PROJECT,
        }
        return {**quick, **secondary}

    with running_stack(infrastructure, tmp_path_factory.mktemp("service-logs"), env) as stack:
        yield stack
