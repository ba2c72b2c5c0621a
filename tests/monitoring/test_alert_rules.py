"""The alert rules (prometheus/alerts.yml) with Prometheus' own tool: valid, and each alert unit-tested on
series that fire it and near misses that do not (prometheus/alerts_test.yml)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

RULES = Path(__file__).parents[2] / "prometheus"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run scripts/install-system.sh (installs Debian's prometheus)"
    return subprocess.run(
        [promtool, *args], cwd=RULES, capture_output=True, text=True, timeout=120, check=False
    )


def test_rules_are_valid() -> None:
    result = _promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout


def test_rules_unit_tests_pass() -> None:
    result = _promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_unit_tested() -> None:
    alerts = {
        r["alert"] for g in yaml.safe_load((RULES / "alerts.yml").read_text())["groups"] for r in g["rules"]
    }
    tested = {
        t["alertname"]
        for case in yaml.safe_load((RULES / "alerts_test.yml").read_text())["tests"]
        for t in case.get("alert_rule_test", [])
        if t.get("exp_alerts")
    }
    assert alerts == tested, f"alerts without a firing test: {sorted(alerts - tested)}"


def test_the_rules_and_the_grafana_dashboard_name_metrics_we_export() -> None:
    """Every clickstream_* series the rules and the dashboard query is one our processes define (the
    exporter, the API, the producer), so neither can drift from the code."""
    code = Path(__file__).parents[2] / "clickstream_dagster"
    defined = set()
    for source in [
        *(code / "monitoring").glob("*.py"),
        code / "api" / "metrics.py",
        code / "producer" / "metrics.py",
    ]:
        defined |= set(re.findall(r'"(clickstream_[a-z0-9_]+)"', source.read_text()))
    dashboard = json.loads((RULES / "grafana" / "clickstream.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = [
        r["expr"] for g in yaml.safe_load((RULES / "alerts.yml").read_text())["groups"] for r in g["rules"]
    ]
    queried = set(re.findall(r"clickstream_[a-z0-9_]+", " ".join(exprs + rules)))

    def base(names: set[str]) -> set[str]:
        return {re.sub(r"_(bucket|count|sum|total)$", "", name) for name in names}

    missing = base(queried) - base(defined)
    assert missing == set(), f"queried but never exported: {sorted(missing)}"
    assert len(exprs) >= 14
