"""A throwaway Pulse: its own PostgreSQL database and RabbitMQ vhost, and the services as processes.

Used by the test suite and by `make bench`, so both measure the real system, not mocks.
"""

import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from pulse.admin.cli import ensure_database, init
from pulse.admin.settings import AdminSettings
from pulse.db import make_engine, make_session_factory, transaction
from pulse.settings import BrokerSettings, DatabaseSettings
from pulse.tenants.service import Scope, create_api_key, create_tenant

REPO = Path(__file__).resolve().parents[1]
SERVER_DATABASE_URL = os.environ.get(
    "PULSE_TEST_DATABASE_SERVER", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
BROKER_SERVER_URL = os.environ.get("PULSE_TEST_BROKER_SERVER", "amqp://guest:guest@127.0.0.1:5672")


class Timeout(Exception):
    pass


def wait_until(
    condition: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.1, what: str = ""
) -> Any:
    """Poll `condition` until it returns something truthy; raise Timeout at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def _ports_below_the_ephemeral_range() -> range:
    """The kernel picks the local port of every outgoing connection (to PostgreSQL, RabbitMQ, a test's
    HTTP client) from the ephemeral range; a port found free there can be taken by one of them before the
    service that was handed it binds it (seen: realtime's port 51679, EADDRINUSE)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(max(1024, low - 12000), low)


_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, outside the ephemeral range, not handed out before by this process."""
    candidates = _ports_below_the_ephemeral_range()
    for _ in range(1000):
        port = random.choice(candidates)
        if port in _handed_out:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {candidates}")


MANAGEMENT_API = os.environ.get("PULSE_TEST_RABBITMQ_API", "http://guest:guest@127.0.0.1:15672/api")


def _create_vhost(name: str) -> None:
    """With rabbitmqctl where it can run (the broker's own machine), else the management API
    (RabbitMQ in a container)."""
    if shutil.which("rabbitmqctl"):
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", name], check=True, capture_output=True, timeout=60)
        subprocess.run(
            ["rabbitmqctl", "-q", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return
    httpx.put(f"{MANAGEMENT_API}/vhosts/{name}", timeout=30).raise_for_status()
    permissions = {"configure": ".*", "write": ".*", "read": ".*"}
    httpx.put(f"{MANAGEMENT_API}/permissions/{name}/guest", json=permissions, timeout=30).raise_for_status()


def _delete_vhost(name: str) -> None:
    if shutil.which("rabbitmqctl"):
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_vhost", name], check=True, capture_output=True, timeout=60
        )
    else:
        httpx.delete(f"{MANAGEMENT_API}/vhosts/{name}", timeout=30).raise_for_status()


@contextmanager
def isolated_vhost(prefix: str) -> Iterator[str]:
    """A new RabbitMQ vhost alone (its AMQP URL), deleted on exit."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    _create_vhost(name)
    try:
        yield f"{BROKER_SERVER_URL}/{name}"
    finally:
        _delete_vhost(name)


@dataclass(frozen=True)
class Infrastructure:
    database_url: str
    broker_url: str

    def env(self) -> dict[str, str]:
        return {"PULSE_DATABASE_URL": self.database_url, "PULSE_BROKER_URL": self.broker_url}

    def create_tenant_with_key(self, name: str, *scopes: Scope) -> str:
        """A tenant and an API key for it (returned)."""
        engine = make_engine(DatabaseSettings(url=self.database_url))
        try:
            with transaction(make_session_factory(engine)) as session:
                create_tenant(session, name=name)
                return create_api_key(session, tenant_name=name, scopes=list(scopes))
        finally:
            engine.dispose()


@contextmanager
def isolated_infrastructure(prefix: str = "pulse_test") -> Iterator[Infrastructure]:
    """A new database and vhost, migrated and declared; both dropped on exit."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    database_url = make_url(SERVER_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
    _create_vhost(name)
    try:
        infrastructure = Infrastructure(database_url=database_url, broker_url=f"{BROKER_SERVER_URL}/{name}")
        ensure_database(database_url)
        init(
            AdminSettings(
                database=DatabaseSettings(url=database_url),
                broker=BrokerSettings(url=infrastructure.broker_url),
            )
        )
        yield infrastructure
    finally:
        server = create_engine(SERVER_DATABASE_URL, isolation_level="AUTOCOMMIT")
        with server.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()
        _delete_vhost(name)


def metric_value(url: str, sample: str) -> float:
    """The value of one sample (name with labels, as printed) on a /metrics page; 0 if absent."""
    for line in httpx.get(url, timeout=5).text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return 0.0


SERVICES = {
    "sandbox": "services.sandbox",
    "api": "services.api",
    "email_worker": "services.email_worker",
    # A second email worker for the urgent priorities only (see `running_stack`).
    "email_worker_urgent": "services.email_worker",
    "sms_worker": "services.sms_worker",
    "push_worker": "services.push_worker",
    "webhook_worker": "services.webhook_worker",
    "inapp_worker": "services.realtime.worker",
    "scheduler": "services.scheduler",
    "realtime": "services.realtime",
}


@dataclass
class Stack:
    infrastructure: Infrastructure
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    # What a service's process gets besides `env`.
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # Further processes of a service (`start_replica`): replica name → service name.
    replicas: dict[str, str] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return self.gateway_url("api")

    def gateway_url(self, name: str) -> str:
        """The base URL of the gateway `name` (`api`, or a replica of it)."""
        return f"http://127.0.0.1:{self.ports[name]}"

    def realtime_url(self, name: str = "realtime") -> str:
        """The base URL of the realtime process `name` (`realtime`, or a replica of it)."""
        return f"http://127.0.0.1:{self.ports[name]}"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['sandbox_http']}"

    @property
    def pids(self) -> dict[str, int]:
        """The process id of each running service (what `make bench` measures the CPU of)."""
        return {name: process.pid for name, process in self.processes.items()}

    def metrics_url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service + '_metrics']}/metrics"

    def client(self, api_key: str) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10)

    def sandbox(self) -> httpx.Client:
        return httpx.Client(base_url=self.sandbox_url, timeout=10)

    def start(self, *names: str) -> None:
        """Start services (side by side) and wait until each answers."""
        for name in names:
            log = (self.log_dir / f"{name}.log").open("ab")
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", SERVICES[self.replicas.get(name, name)]],
                cwd=REPO,
                env={**self.env, **self.service_env.get(name, {})},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        for name in names:
            process, url = self.processes[name], self._health_url(name)

            def ready(process: subprocess.Popen[bytes] = process, name: str = name, url: str = url) -> bool:
                return _started(process, self.log_dir / f"{name}.log") and _responds(url)

            wait_until(ready, timeout=60, what=f"{name} at {url} (logs: {self.log_dir})")

    def start_replica(self, service: str, replica: str) -> None:
        """Start one more process of `service` (the gateway, the realtime service, a channel worker or the
        scheduler) named `replica`, on a port of its own (the HTTP port, or the metrics port), as a replica
        on another host would run: `gateway_url(replica)` / `realtime_url(replica)` /
        `metrics_url(replica)` reach it."""
        if service in ("api", "realtime"):
            port, variable = replica, f"PULSE_{service.upper()}_PORT"
        else:
            port, variable = f"{replica}_metrics", f"PULSE_{service.upper()}_METRICS_PORT"
        self.ports[port] = free_port()
        self.replicas[replica] = service
        self.service_env[replica] = {**self.service_env.get(service, {}), variable: str(self.ports[port])}
        self.start(replica)

    def kill(self, name: str) -> None:
        """SIGKILL: the process gets no chance to finish anything."""
        process = self.processes.pop(name)
        process.kill()
        process.wait()

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for name, process in self.processes.items():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                print(f"{name} did not stop on SIGTERM; killed (logs: {self.log_dir})")
        self.processes.clear()

    def _health_url(self, name: str) -> str:
        service = self.replicas.get(name, name)
        if service == "api":
            return f"{self.gateway_url(name)}/readyz"
        if service == "realtime":
            return f"{self.realtime_url(name)}/healthz"
        return {"sandbox": f"{self.sandbox_url}/healthz"}.get(name) or self.metrics_url(name)


def _started(process: subprocess.Popen[bytes], log: Path) -> bool:
    """True while the process runs; a process that exited during start-up fails at once, with its log."""
    if process.poll() is None:
        return True
    raise RuntimeError(f"exited with {process.returncode} while starting:\n{log.read_text()[-3000:]}")


def _responds(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def running_stack(
    infrastructure: Infrastructure,
    log_dir: Path,
    extra_env: dict[str, str] | Callable[[Stack], dict[str, str]] | None = None,
    services: Sequence[str] = tuple(name for name in SERVICES if name != "email_worker_urgent"),
) -> Iterator[Stack]:
    """Start `services` (default: one of each) on free ports against `infrastructure`; stop them (SIGTERM)
    on exit.

    `extra_env` may be a function of the stack, for values that name its ports (say, its sandbox URL).
    """
    stack = Stack(infrastructure, log_dir)
    for port in (
        "api",
        "sandbox_http",
        "sandbox_smtp",
        "sandbox_smtp_secondary",
        "email_worker_metrics",
        "email_worker_urgent_metrics",
        "sms_worker_metrics",
        "push_worker_metrics",
        "webhook_worker_metrics",
        "inapp_worker_metrics",
        "scheduler_metrics",
        "realtime",
    ):
        stack.ports[port] = free_port()
    stack.env = {
        **os.environ,
        **infrastructure.env(),
        "PULSE_API_PORT": str(stack.ports["api"]),
        "PULSE_SMTP_HOST": "127.0.0.1",
        "PULSE_SMTP_PORT": str(stack.ports["sandbox_smtp"]),
        "PULSE_SANDBOX_SMTP_PORT": str(stack.ports["sandbox_smtp"]),
        # A second relay for email failover; the email worker uses it only when told to (tests do).
        "PULSE_SANDBOX_SMTP_SECONDARY_PORT": str(stack.ports["sandbox_smtp_secondary"]),
        "PULSE_SANDBOX_HTTP_PORT": str(stack.ports["sandbox_http"]),
        "PULSE_EMAIL_WORKER_METRICS_PORT": str(stack.ports["email_worker_metrics"]),
        # When the urgent email worker runs too, the other one leaves it critical and high.
        **({"PULSE_EMAIL_WORKER_PRIORITIES": "normal,low"} if "email_worker_urgent" in services else {}),
        "PULSE_TWILIO_BASE_URL": f"http://127.0.0.1:{stack.ports['sandbox_http']}",
        "PULSE_SMS_WORKER_METRICS_PORT": str(stack.ports["sms_worker_metrics"]),
        "PULSE_FCM_BASE_URL": f"http://127.0.0.1:{stack.ports['sandbox_http']}",
        "PULSE_PUSH_WORKER_METRICS_PORT": str(stack.ports["push_worker_metrics"]),
        "PULSE_WEBHOOK_WORKER_METRICS_PORT": str(stack.ports["webhook_worker_metrics"]),
        # The sandbox's webhook receiver is on loopback, which the SSRF guard refuses otherwise (its
        # port only, as `make run` does).
        "PULSE_WEBHOOK_ALLOWLIST": "127.0.0.1:{0},localhost:{0}".format(stack.ports["sandbox_http"]),
        "PULSE_INAPP_WORKER_METRICS_PORT": str(stack.ports["inapp_worker_metrics"]),
        "PULSE_SCHEDULER_METRICS_PORT": str(stack.ports["scheduler_metrics"]),
        "PULSE_REALTIME_PORT": str(stack.ports["realtime"]),
        # The realtime demo page calls the gateway from its own origin.
        "PULSE_CORS_ORIGINS": "http://127.0.0.1:{0},http://localhost:{0}".format(stack.ports["realtime"]),
        # Measurements and tests send around the clock; quiet hours would park them at night.
        "PULSE_QUIET_HOURS": "off",
    }
    stack.env.update((extra_env(stack) if callable(extra_env) else extra_env) or {})
    stack.service_env["email_worker_urgent"] = {
        "PULSE_EMAIL_WORKER_PRIORITIES": "critical,high",
        "PULSE_EMAIL_WORKER_METRICS_PORT": str(stack.ports["email_worker_urgent_metrics"]),
    }
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        stack.start(*services)
        yield stack
    finally:
        stack.stop_all()
