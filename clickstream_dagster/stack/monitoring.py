"""Monitoring in the local stack: the pipeline's Prometheus exporter (`python -m clickstream_dagster.monitoring`)
and, when their binaries are installed, a real Prometheus that scrapes the exporter, the API and the producer
and evaluates the alert rules of prometheus/alerts.yml, and a real Alertmanager that Prometheus sends its
alerts to and that posts them, and their resolution, to SLACK_WEBHOOK_URL.

Who tells a person what (docs/operations.md, "Who alerts"): Alertmanager owns every Prometheus alert except
the ones labelled `notify: dagster`, the failed runs, which Dagster's own `slack_on_run_failure` sensor posts
(with the run, the failed step and the error); Alertmanager routes those to no receiver, so a failed run is
posted once. Without SLACK_WEBHOOK_URL, Alertmanager still runs (its UI lists the alerts) and routes nothing:
`status` shows the routing as off.

Prometheus and Alertmanager are optional: without their binaries on PATH (or CLICKSTREAM_PROMETHEUS_BIN,
CLICKSTREAM_ALERTMANAGER_BIN), `up` says how to install them and goes on. Their configuration is written into
the stack's data folder on every start.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from clickstream_dagster.stack.config import StackConfig
from clickstream_dagster.stack.process import ManagedProcess, ensure_port_free, wait_until

INSTALL_COMMAND = "sudo apt-get install -y --no-install-recommends prometheus prometheus-alertmanager"
PROMETHEUS_HINT = (
    "Prometheus is not installed, so it was not started (the exporter is): on Debian or Ubuntu "
    f"`{INSTALL_COMMAND}` (`make setup` runs it when it can), or set CLICKSTREAM_PROMETHEUS_BIN to a "
    "prometheus binary"
)
ALERTMANAGER_HINT = (
    "Alertmanager is not installed, so alerts are not routed to anyone: on Debian or Ubuntu "
    f"`{INSTALL_COMMAND}` (`make setup` runs it when it can), or set CLICKSTREAM_ALERTMANAGER_BIN to an "
    "alertmanager binary"
)

# The label of the alerts that Dagster's run-failure sensor posts itself (Alertmanager drops them).
DAGSTER_OWNED = 'notify="dagster"'

SLACK_TITLE = "[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }} ({{ .CommonLabels.severity }})"
SLACK_TEXT = (
    "{{ range .Alerts }}*{{ .Annotations.summary }}* ({{ .Status }})\n"
    "{{ .Annotations.description }}\n"
    "Labels: {{ range .Labels.SortedPairs }}{{ .Name }}={{ .Value }} {{ end }}\n"
    "{{ end }}"
)


def prometheus_binary(env: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    return env.get("CLICKSTREAM_PROMETHEUS_BIN") or shutil.which("prometheus")


def alertmanager_binary(env: Mapping[str, str] | None = None) -> str | None:
    """Debian names it prometheus-alertmanager, upstream alertmanager."""
    env = os.environ if env is None else env
    return (
        env.get("CLICKSTREAM_ALERTMANAGER_BIN")
        or shutil.which("prometheus-alertmanager")
        or shutil.which("alertmanager")
    )


def rules_file(cfg: StackConfig) -> Path:
    return cfg.root / "prometheus" / "alerts.yml"


def prometheus_config(cfg: StackConfig, rules: Path, interval: str, alertmanager: bool) -> dict[str, Any]:
    """Scrape the exporter, the API and the producer; evaluate `rules`; send alerts to the stack's
    Alertmanager when it runs."""
    target = f"{cfg.host}:{{}}".format
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target(port)]}]}
            for job, port in (
                ("clickstream-pipeline", cfg.ports.exporter),
                ("clickstream-api", cfg.ports.api),
                ("clickstream-producer", cfg.ports.producer_metrics),
            )
        ],
    }
    if alertmanager:
        config["alerting"] = {
            "alertmanagers": [{"static_configs": [{"targets": [target(cfg.ports.alertmanager)]}]}]
        }
    return config


def alertmanager_config(
    webhook_file: Path | None, group_wait: str, group_interval: str, repeat_interval: str
) -> dict[str, Any]:
    """Every alert on its own (grouped by all its labels) to Slack, resolutions too; the Dagster-owned ones
    to no receiver. Without a webhook, everything goes to no receiver (routing off)."""
    receivers: list[dict[str, Any]] = [{"name": "none"}]
    if webhook_file is not None:
        receivers.append(
            {
                "name": "slack",
                "slack_configs": [
                    {
                        "api_url_file": str(webhook_file),
                        "send_resolved": True,
                        "title": SLACK_TITLE,
                        "text": SLACK_TEXT,
                    }
                ],
            }
        )
    return {
        "route": {
            "receiver": "slack" if webhook_file is not None else "none",
            "group_by": ["..."],
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
            # Failed runs: Dagster's slack_on_run_failure posts them, with the run and its error.
            "routes": [{"matchers": [DAGSTER_OWNED], "receiver": "none"}],
        },
        "receivers": receivers,
    }


def _dump(config: dict[str, Any]) -> str:
    return "# Written by `clickstream up` on every start; edits are overwritten.\n" + yaml.safe_dump(
        config, sort_keys=False, width=1000
    )


class MonitoringServices:
    def __init__(self, cfg: StackConfig, env: Mapping[str, str] | None = None) -> None:
        self.cfg = cfg
        self.env = dict(os.environ if env is None else env)
        self.exporter = ManagedProcess("exporter", cfg.run_dir, cfg.log_dir)
        self.prometheus = ManagedProcess("prometheus", cfg.run_dir, cfg.log_dir)
        self.alertmanager = ManagedProcess("alertmanager", cfg.run_dir, cfg.log_dir)

    @property
    def exporter_url(self) -> str:
        return f"http://{self.cfg.host}:{self.cfg.ports.exporter}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.cfg.host}:{self.cfg.ports.prometheus}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://{self.cfg.host}:{self.cfg.ports.alertmanager}"

    @property
    def prometheus_dir(self) -> Path:
        return self.cfg.data_dir / "prometheus"

    @property
    def alertmanager_dir(self) -> Path:
        return self.cfg.data_dir / "alertmanager"

    @property
    def routing(self) -> bool:
        """Whether Alertmanager posts alerts to Slack (SLACK_WEBHOOK_URL is set)."""
        return bool(self.cfg.slack_webhook_url)

    def config_text(self, rules: Path | None = None) -> str:
        return _dump(
            prometheus_config(
                self.cfg,
                rules or rules_file(self.cfg),
                self.env.get("CLICKSTREAM_PROMETHEUS_SCRAPE_INTERVAL", "5s"),
                alertmanager_binary(self.env) is not None,
            )
        )

    def alertmanager_config_text(self) -> str:
        webhook = None
        if self.cfg.slack_webhook_url:
            # In a file of its own (owner-only), so the URL, a secret, is not in the config or on a command line.
            webhook = self.alertmanager_dir / "slack_webhook_url"
            webhook.write_text(self.cfg.slack_webhook_url)
            webhook.chmod(0o600)
        return _dump(
            alertmanager_config(
                webhook,
                self.env.get("CLICKSTREAM_ALERTMANAGER_GROUP_WAIT", "30s"),
                self.env.get("CLICKSTREAM_ALERTMANAGER_GROUP_INTERVAL", "5m"),
                self.env.get("CLICKSTREAM_ALERTMANAGER_REPEAT_INTERVAL", "4h"),
            )
        )

    def start(self, timeout: float = 60.0, rules: Path | None = None) -> list[str]:
        """Start what is not running; returns notes for the user about what is not installed."""
        self.start_exporter()
        notes = []
        alertmanager = self.start_alertmanager()
        if alertmanager is None:
            notes.append(ALERTMANAGER_HINT)
        prometheus = self.start_prometheus(rules)
        if prometheus is None:
            notes.append(PROMETHEUS_HINT)
        wait_until(
            self.exporter_healthy, timeout, "pipeline exporter", self.exporter.running, self.exporter.log_tail
        )
        if alertmanager is not None:
            wait_until(
                self.alertmanager_healthy,
                timeout,
                "Alertmanager",
                self.alertmanager.running,
                self.alertmanager.log_tail,
            )
        if prometheus is not None:
            wait_until(
                self.prometheus_healthy,
                timeout,
                "Prometheus",
                self.prometheus.running,
                self.prometheus.log_tail,
            )
        return notes

    def start_exporter(self) -> None:
        cfg = self.cfg
        if self.exporter.running():
            return
        ensure_port_free(cfg.host, cfg.ports.exporter, "the pipeline exporter", "CLICKSTREAM_EXPORTER_PORT")
        self.exporter.start(
            [sys.executable, "-m", "clickstream_dagster.monitoring", "--host", cfg.host,
             "--port", str(cfg.ports.exporter),
             "--interval", self.env.get("CLICKSTREAM_EXPORTER_INTERVAL_SECONDS", "5")],
            {**self.env, **cfg.service_env()},
            cwd=cfg.root,
        )  # fmt: skip

    def start_prometheus(self, rules: Path | None = None) -> str | None:
        """Start Prometheus unless it runs; its binary, None when it is not installed."""
        port, folder = self.cfg.ports.prometheus, self.prometheus_dir
        return self._start(
            self.prometheus, prometheus_binary(self.env), port, "Prometheus", "CLICKSTREAM_PROMETHEUS_PORT",
            folder / "prometheus.yml", lambda: self.config_text(rules),
            [f"--storage.tsdb.path={folder / 'data'}", "--web.enable-lifecycle"],
        )  # fmt: skip

    def start_alertmanager(self) -> str | None:
        """Start Alertmanager unless it runs; its binary, None when it is not installed."""
        port, folder = self.cfg.ports.alertmanager, self.alertmanager_dir
        return self._start(
            self.alertmanager, alertmanager_binary(self.env), port, "Alertmanager",
            "CLICKSTREAM_ALERTMANAGER_PORT", folder / "alertmanager.yml", self.alertmanager_config_text,
            [f"--storage.path={folder / 'data'}", "--cluster.listen-address="],  # one instance: no gossip
        )  # fmt: skip

    def _start(
        self,
        proc: ManagedProcess,
        binary: str | None,
        port: int,
        what: str,
        port_var: str,
        config: Path,
        config_text: Callable[[], str],
        flags: list[str],
    ) -> str | None:
        """A Prometheus-family server on `port` with `config` written afresh; its binary, None when missing."""
        if binary is None or proc.running():
            return binary
        ensure_port_free(self.cfg.host, port, what, port_var)
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(config_text())
        argv = [binary, f"--config.file={config}", f"--web.listen-address={self.cfg.host}:{port}", *flags]
        proc.start(argv, self.env, cwd=self.cfg.root)
        return binary

    def exporter_healthy(self) -> bool:
        return _answers(f"{self.exporter_url}/metrics")

    def prometheus_healthy(self) -> bool:
        return _answers(f"{self.prometheus_url}/-/ready")

    def alertmanager_healthy(self) -> bool:
        return _answers(f"{self.alertmanager_url}/-/ready")

    def stop(self) -> list[str]:
        return [p.name for p in (self.prometheus, self.alertmanager, self.exporter) if p.stop(timeout=10)]


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=3).status_code == 200
    except httpx.HTTPError:
        return False
