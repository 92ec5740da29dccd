"""deploy/k8s: every overlay renders, validates against the Kubernetes schemas (offline, from the
kubernetes-validate package), and holds to what Pulse's services need."""

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pulse.messaging.topology import work_queue
from pulse.vocabulary import Channel, Priority
from services.email_worker.settings import EmailWorkerSettings
from services.push_worker.settings import PushWorkerSettings
from services.realtime.worker import InappWorkerSettings
from services.scheduler.settings import SchedulerSettings
from services.sms_worker.settings import SmsWorkerSettings
from services.webhook_worker.settings import WebhookWorkerSettings
from tests.deploy.settings_names import OTHER_VARIABLES, pulse_variables

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
OVERLAYS = sorted(path.name for path in (K8S / "overlays").iterdir())

# Custom resources: kubernetes-validate ships only the core API's schemas, and their operators' CRD
# schemas are not packaged anywhere we install from; the assertions below check what Pulse relies on.
CUSTOM_KINDS = {
    "ScaledObject": "KEDA",
    "TriggerAuthentication": "KEDA",
    "ServiceMonitor": "Prometheus Operator",
    "RabbitmqCluster": "RabbitMQ Cluster Operator",
    "Cluster": "CloudNativePG",
}

# Module each channel worker runs → the channels it consumes, its settings (env prefix, metrics port).
CHANNEL_WORKERS = {
    "services.email_worker": ([Channel.EMAIL], EmailWorkerSettings),
    "services.sms_worker": ([Channel.SMS, Channel.WHATSAPP], SmsWorkerSettings),
    "services.push_worker": ([Channel.PUSH], PushWorkerSettings),
    "services.webhook_worker": ([Channel.WEBHOOK], WebhookWorkerSettings),
    "services.realtime.worker": ([Channel.INAPP], InappWorkerSettings),
}
# What a container of the Pulse image runs (the infrastructure's images run their own).
PULSE_COMMANDS = {"python", "pulse-admin", "celery"}
METRICS_PORTS = {
    module: settings.model_fields["metrics_port"].default for module, (_, settings) in CHANNEL_WORKERS.items()
} | {"services.scheduler": SchedulerSettings.model_fields["metrics_port"].default}


def _render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (Debian: apt-get install kubernetes-client; make test-tools)")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=60
    )
    assert rendered.returncode == 0, rendered.stderr
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def manifests(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return _render(request.param)


def _of_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in manifests if doc["kind"] == kind}


def _pulse_containers(manifests: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(workload name, pod spec, container) of every container running the Pulse image."""
    return [
        (doc["metadata"]["name"], doc["spec"]["template"]["spec"], container)
        for doc in manifests
        if doc["kind"] in {"Deployment", "Job"}
        for container in doc["spec"]["template"]["spec"]["containers"]
        if container["command"][0] in PULSE_COMMANDS
    ]


def _module(container: dict[str, Any]) -> str | None:
    command = container["command"]
    return command[command.index("-m") + 1] if "-m" in command else None


def _long_running(manifests: list[dict[str, Any]]) -> set[str]:
    """The gateway, the realtime service, the workers and the scheduler: what exports metrics and must
    survive disruptions."""
    modules = {"services.api", "services.realtime", *METRICS_PORTS}
    return {name for name, _, container in _pulse_containers(manifests) if _module(container) in modules}


def test_every_overlay_is_valid_kubernetes(manifests: list[dict[str, Any]]) -> None:
    version = kubernetes_validate.latest_version()
    for doc in manifests:
        if doc["kind"] in CUSTOM_KINDS:
            continue  # not in kubernetes-validate's schemas: see CUSTOM_KINDS
        kubernetes_validate.validate(doc, version, strict=True)


def test_every_pulse_container_is_probed_limited_and_unprivileged(manifests: list[dict[str, Any]]) -> None:
    containers = _pulse_containers(manifests)
    assert len(containers) >= 8
    images = {container["image"] for _, _, container in containers}
    assert len(images) == 1, f"one image for every service, not {images}"
    for name, pod, container in containers:
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert {"cpu", "memory"} <= container["resources"]["limits"].keys(), name
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys(), name
        if name != "pulse-init":
            assert "livenessProbe" in container and "readinessProbe" in container, name


def test_probes_hit_the_services_real_endpoints(manifests: list[dict[str, Any]]) -> None:
    for name, _, container in _pulse_containers(manifests):
        module = _module(container)
        ports = {port["name"]: port["containerPort"] for port in container.get("ports", [])}
        if module == "services.api":
            assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
            assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
            assert ports["http"] == 8000
        elif module == "services.realtime":
            for probe in ("livenessProbe", "readinessProbe"):
                assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, name
            assert ports["http"] == 8010
        elif module in METRICS_PORTS:
            assert ports["metrics"] == METRICS_PORTS[module], name
            for probe in ("livenessProbe", "readinessProbe"):
                assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}, name


def test_every_variable_is_one_pulse_reads(manifests: list[dict[str, Any]]) -> None:
    known = pulse_variables() | OTHER_VARIABLES
    given = {key for config in _of_kind(manifests, "ConfigMap").values() for key in config["data"]}
    given |= {key for secret in _of_kind(manifests, "Secret").values() for key in secret.get("data", {})}
    containers = _pulse_containers(manifests)
    given |= {env["name"] for _, _, container in containers for env in container.get("env", [])}
    assert given, "no settings at all"
    assert given <= known, f"not read by any settings class: {sorted(given - known)}"


def test_every_long_running_service_has_a_disruption_budget(manifests: list[dict[str, Any]]) -> None:
    budgets = {
        pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for pdb in _of_kind(manifests, "PodDisruptionBudget").values()
    }
    assert _long_running(manifests) <= budgets, _long_running(manifests) - budgets


def test_production_scales_every_channel_worker_on_its_queues() -> None:
    manifests = _render("production")
    scaled_objects = {
        scaled["spec"]["scaleTargetRef"]["name"]: scaled
        for scaled in _of_kind(manifests, "ScaledObject").values()
    }
    authentications = _of_kind(manifests, "TriggerAuthentication")
    workers = 0
    for name, _, container in _pulse_containers(manifests):
        if _module(container) not in CHANNEL_WORKERS:
            continue
        workers += 1
        channels, settings = CHANNEL_WORKERS[_module(container)]
        env = {variable["name"]: variable["value"] for variable in container.get("env", [])}
        configured = env.get(f"{settings.model_config['env_prefix']}PRIORITIES")  # default: all
        priorities = [Priority(p) for p in configured.split(",")] if configured else list(Priority)
        consumed = {work_queue(channel, priority).name for channel in channels for priority in priorities}

        assert name in scaled_objects, f"{name} has no ScaledObject"
        spec = scaled_objects[name]["spec"]
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"], name
        assert {trigger["type"] for trigger in spec["triggers"]} == {"rabbitmq"}, name
        assert {trigger["metadata"]["queueName"] for trigger in spec["triggers"]} == consumed, name
        for trigger in spec["triggers"]:
            assert trigger["authenticationRef"]["name"] in authentications, name
            assert trigger["metadata"]["mode"] == "QueueLength" and int(trigger["metadata"]["value"]) > 0
    assert workers == 6  # email (urgent and the rest), sms, push, webhook, inapp

    hpa = _of_kind(manifests, "HorizontalPodAutoscaler")["api"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "api" and hpa["minReplicas"] >= 2
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    # An apply must not reset what the autoscalers chose.
    deployments = _of_kind(manifests, "Deployment")
    for autoscaled in [*scaled_objects, hpa["scaleTargetRef"]["name"]]:
        assert "replicas" not in deployments[autoscaled]["spec"], autoscaled


def test_production_monitors_every_service_that_exports_metrics() -> None:
    manifests = _render("production")
    (monitor,) = _of_kind(manifests, "ServiceMonitor").values()
    (selected,) = monitor["spec"]["selector"]["matchExpressions"]
    scraped_ports = {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]}
    deployments = _long_running(manifests)
    services = [
        service
        for service in _of_kind(manifests, "Service").values()
        if service["metadata"].get("labels", {}).get("app.kubernetes.io/name") in selected["values"]
    ]
    assert selected["operator"] == "In" and set(selected["values"]) == deployments
    assert {svc["spec"]["selector"]["app.kubernetes.io/name"] for svc in services} == deployments
    for service in services:
        ports = {port["name"] for port in service["spec"]["ports"]}
        assert ports & scraped_ports, service["metadata"]["name"]
