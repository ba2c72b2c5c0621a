"""Prometheus is optional in the stack: without the binary, `up` says how to install it and goes on."""

from __future__ import annotations

from pathlib import Path

import pytest

from clickstream_dagster.stack.manager import ComponentStatus
from clickstream_dagster.stack.monitoring import PROMETHEUS_HINT, MonitoringServices, prometheus_binary
from tests.conftest import make_test_config


def test_without_the_binary_up_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no prometheus anywhere
    monkeypatch.delenv("CLICKSTREAM_PROMETHEUS_BIN", raising=False)
    assert prometheus_binary() is None
    assert "apt-get install -y --no-install-recommends prometheus" in PROMETHEUS_HINT
    assert "CLICKSTREAM_PROMETHEUS_BIN" in PROMETHEUS_HINT
    assert ComponentStatus("prometheus", "-", "not installed").ok  # `clickstream status` stays green
    fake = tmp_path / "prometheus"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert prometheus_binary() == str(fake)
    monkeypatch.setenv("CLICKSTREAM_PROMETHEUS_BIN", "/opt/prom/prometheus")
    assert prometheus_binary() == "/opt/prom/prometheus"


def test_the_generated_config_scrapes_the_three_targets_with_the_rules(tmp_path: Path) -> None:
    import yaml

    cfg = make_test_config(tmp_path / "data")
    config = yaml.safe_load(MonitoringServices(cfg).config_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets == {
        "clickstream-pipeline": [f"{cfg.host}:{cfg.ports.exporter}"],
        "clickstream-api": [f"{cfg.host}:{cfg.ports.api}"],
        "clickstream-producer": [f"{cfg.host}:{cfg.ports.producer_metrics}"],
    }
    assert config["rule_files"] == [str(cfg.root / "prometheus" / "alerts.yml")]
