"""The shipped Prometheus and Grafana files refer only to metrics Pulse exports."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

import pulse.observability.metrics  # noqa: F401 - registers every metric

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _exported_names() -> set[str]:
    names = set()
    for collector in REGISTRY.collect():
        if collector.name.startswith("pulse_"):
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(
                collector.type, [""]
            )
            names |= {collector.name + suffix for suffix in suffixes}
    return names


def test_every_grafana_query_uses_exported_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "pulse-dashboard.json").read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"pulse_[a-z_]+", target["expr"])
    }
    assert used, "the dashboard queries nothing"
    assert used <= _exported_names(), used - _exported_names()


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-compose.yml"])
def test_the_prometheus_config_is_valid(config: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    checked = subprocess.run(
        [promtool, "check", "config", str(DEPLOY / "prometheus" / config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
