"""deploy/: every metric the alert rules and the Grafana dashboard query is one a node exports, the rules
are well-formed, and the systemd unit passes ``systemd-analyze verify`` (when it is installed).

Exported names come from the node's real Prometheus registry (``derot.service.metrics.Metrics`` plus the
MQTT publisher's metrics registered on it), with the suffixes the Prometheus client adds per type.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
METRIC = re.compile(r"\b((?:derot|process)_[a-z0-9_]+)\b")
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",), "info": ("_info",), "summary": ("_sum", "_count", "_created")}


def exported() -> set[str]:
    from derot.service.metrics import Metrics
    from derot.service.mqtt import NoticePublisher

    metrics = Metrics()
    NoticePublisher(None, None, chain_id=1, registry="0x" + "11" * 20, metrics_registry=metrics.registry,
                    url="mqtt://127.0.0.1:1883")
    names = set()
    for family in metrics.registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def alert_rules() -> list[dict]:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "derot-alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dash = json.loads((DEPLOY / "grafana" / "derot-dashboard.json").read_text())
    return [t["expr"] for panel in dash["panels"] for t in panel.get("targets", [])]


def used(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in METRIC.findall(e)}


def test_the_registry_exports_build_info_and_process_metrics():
    names = exported()
    assert {"derot_build_info", "process_resident_memory_bytes", "process_open_fds", "derot_epoch",
            "derot_requests_total", "derot_mqtt_connected"} <= names


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_every_queried_metric_exists(source):
    exprs = [r["expr"] for r in alert_rules()] if source == "alerts" else dashboard_exprs()
    queried = used(exprs)
    assert len(queried) >= 8, queried
    missing = queried - exported()
    assert not missing, f"{source} query metrics no node exports: {sorted(missing)}"


def test_the_check_catches_a_misspelled_metric():
    """Control: a query of a metric that does not exist is reported."""
    assert used(["rate(derot_request_total[5m])"]) - exported() == {"derot_request_total"}


def test_alert_rules_are_complete():
    rules = alert_rules()
    assert len({r["alert"] for r in rules}) == len(rules)
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
    promtool = shutil.which("promtool")
    if promtool:
        result = subprocess.run([promtool, "check", "rules", str(DEPLOY / "prometheus" / "derot-alerts.yml")],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_systemd_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = (DEPLOY / "systemd" / "derot-node.service").read_text()
    derot = shutil.which("derot") or str(Path(__import__("sys").executable).with_name("derot"))
    local = tmp_path / "derot-node.service"
    local.write_text(unit.replace("/usr/local/bin/derot", derot))
    result = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True, timeout=60)
    problems = [line for line in result.stderr.splitlines() if str(local) in line]
    assert result.returncode == 0 and not problems, result.stderr
    assert "derot node run --config" in unit and "RestartPreventExitStatus=2 5" in unit
