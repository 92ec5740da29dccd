"""docker-compose.yml: valid against the Compose specification (Debian's docker-compose validates with
its bundled compose_spec.json; no Docker engine needed), and it scales."""

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.settings_names import OTHER_VARIABLES, pulse_variables

ROOT = Path(__file__).resolve().parents[2]
# Services run as replicas (`docker compose up --scale NAME=N`): channel workers and the scheduler.
SCALABLE_MODULES = {
    "services.email_worker",
    "services.sms_worker",
    "services.push_worker",
    "services.webhook_worker",
    "services.realtime.worker",
    "services.scheduler",
}


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    """The services as docker-compose resolved them (anchors merged, schema checked)."""
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("docker-compose is not installed (Debian: apt-get install docker-compose)")
    resolved = subprocess.run(
        [compose, "--file", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert resolved.returncode == 0, resolved.stderr
    services: dict[str, dict[str, Any]] = yaml.safe_load(resolved.stdout)["services"]
    return services


def _scalable(service: dict[str, Any]) -> bool:
    return any(module in service.get("command", []) for module in SCALABLE_MODULES)


def test_scalable_services_publish_no_host_port(services: dict[str, dict[str, Any]]) -> None:
    scalable = [name for name, service in services.items() if _scalable(service)]
    assert {"email-worker", "sms-worker", "scheduler"} <= set(scalable)
    for name in scalable:
        assert "ports" not in services[name], f"{name} publishes a host port: it cannot scale"
        assert "container_name" not in services[name], name


def test_every_long_running_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if service.get("restart") != "no":  # one-shot jobs (init) complete instead
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_prometheus_and_grafana_are_provisioned_from_deploy(services: dict[str, dict[str, Any]]) -> None:
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:  # host:container:mode, host made absolute
            assert Path(volume.split(":")[0]).exists(), volume


def test_every_variable_is_one_pulse_reads(services: dict[str, dict[str, Any]]) -> None:
    given = {
        variable
        for service in services.values()
        if service.get("image") == "pulse:dev"
        for variable in service.get("environment", {})
    }
    assert "PULSE_DATABASE_URL" in given
    assert given <= pulse_variables() | OTHER_VARIABLES, given - pulse_variables() - OTHER_VARIABLES
