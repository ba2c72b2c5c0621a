"""Monitoring in the local stack: the pipeline's Prometheus exporter (`python -m clickstream_dagster.monitoring`)
and, when its binary is installed, a real Prometheus that scrapes the exporter, the API and the producer and
evaluates the alert rules of prometheus/alerts.yml.

Prometheus is optional: without `prometheus` on PATH (or CLICKSTREAM_PROMETHEUS_BIN), `up` says how to
install it and goes on. Its configuration is written into the stack's data folder on every start.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import httpx

from clickstream_dagster.stack.config import StackConfig
from clickstream_dagster.stack.process import ManagedProcess, ensure_port_free, wait_until

INSTALL_HINT = (
    "Prometheus is not installed, so it was not started (the exporter is): on Debian or Ubuntu "
    "`sudo apt-get install -y --no-install-recommends prometheus` (it brings promtool), or set "
    "CLICKSTREAM_PROMETHEUS_BIN to a prometheus binary"
)

PROMETHEUS_YML = """\
# Written by `clickstream up` on every start; edits are overwritten.
global:
  scrape_interval: {interval}
  evaluation_interval: {interval}
rule_files:
  - {rules}
scrape_configs:
  - job_name: clickstream-pipeline
    static_configs: [{{targets: ["{host}:{exporter}"]}}]
  - job_name: clickstream-api
    static_configs: [{{targets: ["{host}:{api}"]}}]
  - job_name: clickstream-producer
    static_configs: [{{targets: ["{host}:{producer}"]}}]
"""


def prometheus_binary(env: dict[str, str] | None = None) -> str | None:
    env = dict(os.environ) if env is None else env
    return env.get("CLICKSTREAM_PROMETHEUS_BIN") or shutil.which("prometheus")


def rules_file(cfg: StackConfig) -> Path:
    return cfg.root / "prometheus" / "alerts.yml"


class MonitoringServices:
    def __init__(self, cfg: StackConfig) -> None:
        self.cfg = cfg
        self.exporter = ManagedProcess("exporter", cfg.run_dir, cfg.log_dir)
        self.prometheus = ManagedProcess("prometheus", cfg.run_dir, cfg.log_dir)

    @property
    def exporter_url(self) -> str:
        return f"http://{self.cfg.host}:{self.cfg.ports.exporter}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.cfg.host}:{self.cfg.ports.prometheus}"

    @property
    def prometheus_dir(self) -> Path:
        return self.cfg.data_dir / "prometheus"

    def config_text(self) -> str:
        cfg = self.cfg
        return PROMETHEUS_YML.format(
            interval=os.environ.get("CLICKSTREAM_PROMETHEUS_SCRAPE_INTERVAL", "5s"),
            rules=rules_file(cfg),
            host=cfg.host,
            exporter=cfg.ports.exporter,
            api=cfg.ports.api,
            producer=cfg.ports.producer_metrics,
        )

    def start(self, timeout: float = 60.0) -> str | None:
        """Start what is not running; returns a note for the user when Prometheus is not installed."""
        cfg = self.cfg
        env = {**os.environ, **cfg.service_env()}
        if not self.exporter.running():
            ensure_port_free(
                cfg.host, cfg.ports.exporter, "the pipeline exporter", "CLICKSTREAM_EXPORTER_PORT"
            )
            self.exporter.start(
                [sys.executable, "-m", "clickstream_dagster.monitoring", "--host", cfg.host,
                 "--port", str(cfg.ports.exporter),
                 "--interval", os.environ.get("CLICKSTREAM_EXPORTER_INTERVAL_SECONDS", "5")],
                env,
                cwd=cfg.root,
            )  # fmt: skip
        binary = prometheus_binary(env)
        note = None
        if binary is None:
            note = INSTALL_HINT
        elif not self.prometheus.running():
            ensure_port_free(cfg.host, cfg.ports.prometheus, "Prometheus", "CLICKSTREAM_PROMETHEUS_PORT")
            self.prometheus_dir.mkdir(parents=True, exist_ok=True)
            config = self.prometheus_dir / "prometheus.yml"
            config.write_text(self.config_text())
            self.prometheus.start(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={self.prometheus_dir / 'data'}",
                 f"--web.listen-address={cfg.host}:{cfg.ports.prometheus}", "--web.enable-lifecycle"],
                env,
                cwd=cfg.root,
            )  # fmt: skip
        wait_until(
            self.exporter_healthy, timeout, "pipeline exporter", self.exporter.running, self.exporter.log_tail
        )
        if binary is not None:
            wait_until(
                self.prometheus_healthy,
                timeout,
                "Prometheus",
                self.prometheus.running,
                self.prometheus.log_tail,
            )
        return note

    def exporter_healthy(self) -> bool:
        try:
            return httpx.get(f"{self.exporter_url}/metrics", timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    def prometheus_healthy(self) -> bool:
        try:
            return httpx.get(f"{self.prometheus_url}/-/ready", timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> list[str]:
        return [p.name for p in (self.prometheus, self.exporter) if p.stop(timeout=10)]
