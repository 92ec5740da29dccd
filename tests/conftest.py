"""Test fixtures: every run gets its own PostgreSQL database and RabbitMQ vhost, removed afterwards.

`stack` starts the real services (sandbox, api, email worker, scheduler) as processes against them.
"""

import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from pulse.admin.cli import ensure_database, init
from pulse.admin.settings import AdminSettings
from pulse.db import make_session_factory, transaction
from pulse.messaging.celery_app import make_celery
from pulse.settings import BrokerSettings, DatabaseSettings
from pulse.tenants.service import Scope, create_api_key, create_tenant

REPO = Path(__file__).resolve().parents[1]
SERVER_DATABASE_URL = os.environ.get("PULSE_TEST_DATABASE_SERVER", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
BROKER_SERVER_URL = os.environ.get("PULSE_TEST_BROKER_SERVER", "amqp://guest:guest@127.0.0.1:5672")


def wait_until(condition: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.1, what: str = "") -> Any:
    """Poll `condition` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class Infrastructure:
    database_url: str
    broker_url: str
    vhost: str

    def env(self) -> dict[str, str]:
        return {"PULSE_DATABASE_URL": self.database_url, "PULSE_BROKER_URL": self.broker_url}


@pytest.fixture(scope="session")
def infrastructure() -> Iterator[Infrastructure]:
    name = f"pulse_test_{os.getpid()}_{secrets.token_hex(3)}"
    database_url = make_url(SERVER_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    infra = Infrastructure(database_url=database_url, broker_url=f"{BROKER_SERVER_URL}/{name}", vhost=name)
    try:
        ensure_database(database_url)
        init(AdminSettings(database=DatabaseSettings(url=database_url), broker=BrokerSettings(url=infra.broker_url)))
        yield infra
    finally:
        server = create_engine(SERVER_DATABASE_URL, isolation_level="AUTOCOMMIT")
        with server.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()
        _rabbitmqctl("delete_vhost", name)


@pytest.fixture(scope="session")
def engine(infrastructure: Infrastructure) -> Iterator[Engine]:
    engine = create_engine(infrastructure.database_url)
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


@pytest.fixture
def make_tenant(session_factory: sessionmaker[Session]) -> Callable[..., Tenant]:
    def make(scopes: str = "send,read,admin") -> Tenant:
        name = f"tenant-{secrets.token_hex(4)}"
        with transaction(session_factory) as session:
            tenant = create_tenant(session, name=name)
            key = create_api_key(session, tenant_name=name, scopes=[Scope(s) for s in scopes.split(",")])
        return Tenant(id=tenant.id, name=name, api_key=key)

    return make


@pytest.fixture
def tenant(make_tenant: Callable[..., Tenant]) -> Tenant:
    return make_tenant()


@pytest.fixture(scope="session")
def celery_publisher(infrastructure: Infrastructure) -> Iterator[Any]:
    app = make_celery("pulse-tests", BrokerSettings(url=infrastructure.broker_url))
    yield app
    app.close()


# --- the running system -------------------------------------------------------------------------


@dataclass
class Stack:
    api_url: str
    sandbox_url: str
    infrastructure: Infrastructure
    log_dir: Path
    email_worker_metrics_url: str

    def metric(self, url: str, sample: str) -> float:
        """The value of one sample (name with labels, as printed) on a /metrics page; 0 if absent."""
        for line in httpx.get(url, timeout=5).text.splitlines():
            name, _, value = line.rpartition(" ")
            if name == sample:
                return float(value)
        return 0.0

    def client(self, api_key: str) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10)

    def sandbox(self) -> httpx.Client:
        return httpx.Client(base_url=self.sandbox_url, timeout=10)


def _start(name: str, module: str, env: dict[str, str], log_dir: Path) -> subprocess.Popen[bytes]:
    log = (log_dir / f"{name}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", module], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
    )


def _responds(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="session")
def stack(infrastructure: Infrastructure, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("service-logs")
    api_port, smtp_port, sandbox_port = free_port(), free_port(), free_port()
    worker_metrics, scheduler_metrics = free_port(), free_port()
    env = {
        **os.environ,
        **infrastructure.env(),
        "PULSE_API_PORT": str(api_port),
        "PULSE_SMTP_HOST": "127.0.0.1",
        "PULSE_SMTP_PORT": str(smtp_port),
        "PULSE_SANDBOX_SMTP_PORT": str(smtp_port),
        "PULSE_SANDBOX_HTTP_PORT": str(sandbox_port),
        "PULSE_EMAIL_WORKER_METRICS_PORT": str(worker_metrics),
        "PULSE_EMAIL_WORKER_CONCURRENCY": "4",
        "PULSE_EMAIL_WORKER_CLAIM_LEASE_SECONDS": "2",
        "PULSE_SCHEDULER_METRICS_PORT": str(scheduler_metrics),
        "PULSE_SCHEDULER_TICK_SECONDS": "0.2",
        "PULSE_PUBLISH_GRACE_SECONDS": "1",
    }
    processes = {
        name: _start(name, module, env, log_dir)
        for name, module in [
            ("sandbox", "services.sandbox"),
            ("api", "services.api"),
            ("email_worker", "services.email_worker"),
            ("scheduler", "services.scheduler"),
        ]
    }
    stack = Stack(
        api_url=f"http://127.0.0.1:{api_port}",
        sandbox_url=f"http://127.0.0.1:{sandbox_port}",
        infrastructure=infrastructure,
        log_dir=log_dir,
        email_worker_metrics_url=f"http://127.0.0.1:{worker_metrics}/metrics",
    )
    try:
        for name, url in [
            ("sandbox", f"{stack.sandbox_url}/healthz"),
            ("api", f"{stack.api_url}/readyz"),
            ("email worker", f"http://127.0.0.1:{worker_metrics}/metrics"),
            ("scheduler", f"http://127.0.0.1:{scheduler_metrics}/metrics"),
        ]:
            wait_until(lambda url=url: _responds(url), timeout=60, what=f"{name} at {url} (logs: {log_dir})")
        yield stack
    finally:
        for process in processes.values():
            process.terminate()
        for name, process in processes.items():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                print(f"{name} did not stop on SIGTERM; killed (logs: {log_dir})")
