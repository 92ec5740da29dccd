"""Every service's /metrics is valid Prometheus text (checked by promtool) and has the contract's names."""

import shutil
import subprocess
import uuid
from collections.abc import Callable

import httpx
import pytest

from devtools.stack import Stack
from tests.conftest import Tenant, wait_until

PROMTOOL = shutil.which("promtool")


@pytest.fixture(scope="module")
def traffic(stack: Stack, make_tenant: Callable[..., Tenant]) -> None:
    """One delivered and one failed notification, so that every metric has samples."""
    tenant = make_tenant()
    with stack.sandbox() as sandbox, stack.client(tenant.api_key) as client:
        ids = []
        for fault in (None, {"endpoint": "smtp", "status": 550, "fail_next": 1}):
            if fault:
                sandbox.post("/api/faults", json=fault).raise_for_status()
            body = {
                "channel": "email",
                "recipient": f"metrics-{uuid.uuid4().hex[:8]}@example.com",
                "content": {"subject": "s", "body": "b"},
            }
            ids.append(client.post("/v1/notifications", json=body).json()["id"])
            wait_until(
                lambda notification_id=ids[-1]: (
                    client.get(f"/v1/notifications/{notification_id}").json()["status"]
                    in ("delivered", "failed")
                ),
                what="the notification to finish",
            )
        sandbox.delete("/api/faults")


def _metrics(url: str) -> str:
    return httpx.get(url, timeout=5).text


@pytest.mark.parametrize("service", ["api", "email_worker", "scheduler"])
def test_metrics_pass_promtool(stack: Stack, traffic: None, service: str) -> None:
    if PROMTOOL is None:
        pytest.skip(
            "promtool is not installed (Debian: apt-get install prometheus; `make test` does it as root)"
        )
    url = f"{stack.api_url}/metrics" if service == "api" else stack.metrics_url(service)

    checked = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=_metrics(url), capture_output=True, text=True, timeout=30
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize(
    ("service", "names"),
    [
        ("api", ["pulse_notifications_accepted_total", "pulse_http_request_duration_seconds_bucket"]),
        (
            "email_worker",
            [
                "pulse_notifications_delivered_total",
                "pulse_notifications_failed_total",
                "pulse_delivery_attempts_total",
                "pulse_delivery_latency_seconds_bucket",
                "pulse_provider_request_seconds_bucket",
            ],
        ),
        ("scheduler", ["pulse_queue_length", "pulse_dead_letters", "pulse_outbox_lag_seconds"]),
    ],
)
def test_the_contract_s_metric_names_have_samples(
    stack: Stack, traffic: None, service: str, names: list[str]
) -> None:
    url = f"{stack.api_url}/metrics" if service == "api" else stack.metrics_url(service)

    def all_present() -> bool:
        samples = {
            line.split("{")[0].split(" ")[0]
            for line in _metrics(url).splitlines()
            if not line.startswith("#")
        }
        return all(name in samples for name in names)

    # Queue metrics are read every few seconds.
    wait_until(all_present, timeout=15, what=f"{names} on {service}")


def test_queue_lengths_name_every_work_and_dead_letter_queue(stack: Stack, traffic: None) -> None:
    def queues() -> set[str]:
        return {
            line.split('queue="')[1].split('"')[0]
            for line in _metrics(stack.metrics_url("scheduler")).splitlines()
            if line.startswith("pulse_queue_length{")
        }

    found = wait_until(lambda: queues() or None, timeout=15, what="queue lengths")
    assert {"pulse.email.normal", "pulse.sms.critical", "pulse.email.dead", "pulse.unroutable"} <= found
