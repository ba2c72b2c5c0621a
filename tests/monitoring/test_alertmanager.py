"""Alerts reach a person: the stack's real Prometheus evaluates a rule of prometheus/alerts.yml against
scraped metrics, the stack's real Alertmanager posts it to a local HTTP server standing in for Slack, firing
and then resolved; a failed run's alert, which Dagster's own sensor posts, is routed to no receiver, so it
is never posted twice. Both are started by the same code as `clickstream up` (stack/monitoring.py)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from clickstream_dagster.stack.manager import Stack
from clickstream_dagster.stack.monitoring import MonitoringServices, alertmanager_binary, rules_file
from tests.conftest import make_test_config


class _Server:
    """A local HTTP server: GET answers `body()` (the scraped metrics), POST bodies are recorded (Slack)."""

    def __init__(self, port: int, body: Callable[[], str] = str) -> None:
        self.posts: list[dict[str, Any]] = []
        posts, text = self.posts, body

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                data = text().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                posts.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _rules(tmp_path: Path) -> Path:
    """The real rules of the two alerts, the source-down one without its 5-minute `for` (it would make the
    test wait that long; its expression, labels and annotations are the real ones)."""
    groups = yaml.safe_load(rules_file(make_test_config(tmp_path / "unused")).read_text())["groups"]
    wanted = {"ClickstreamExporterSourceDown", "ClickstreamRunFailed"}
    rules = [r for g in groups for r in g["rules"] if r.get("alert") in wanted]
    assert {r["alert"] for r in rules} == wanted
    for rule in rules:
        rule.pop("for", None)
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "under-test", "rules": rules}]}))
    return path


def _titles(posts: list[dict[str, Any]]) -> list[str]:
    return [a["title"] for p in posts for a in p.get("attachments", [])]


def _wait(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def metrics() -> dict[str, int]:
    return {"source_up": 0, "failed_runs": 0}


@pytest.fixture
def monitoring(tmp_path: Path, metrics: dict[str, int]) -> Iterator[tuple[MonitoringServices, _Server]]:
    assert alertmanager_binary() is not None, "scripts/install-system.sh monitoring installs it"
    base = make_test_config(tmp_path / "data")
    slack = _Server(base.ports.dashboard)  # a free port of the config, unused here
    env = {
        "SLACK_WEBHOOK_URL": f"http://127.0.0.1:{base.ports.dashboard}/services/T000/B000/XXXX",
        "CLICKSTREAM_PROMETHEUS_SCRAPE_INTERVAL": "1s",
        "CLICKSTREAM_ALERTMANAGER_GROUP_WAIT": "1s",
        "CLICKSTREAM_ALERTMANAGER_GROUP_INTERVAL": "2s",
    }
    cfg = make_test_config(tmp_path / "data", {**os.environ, **env})
    cfg = type(cfg).with_data_dir(cfg, base.data_dir, base.ports)
    exporter = _Server(
        cfg.ports.exporter,
        lambda: (
            f'clickstream_exporter_source_up{{source="kafka"}} {metrics["source_up"]}\n'
            'clickstream_dagster_runs_finished_total{dagster_job="ingest_events",status="FAILURE"} '
            f"{metrics['failed_runs']}\n"
        ),
    )
    mon = MonitoringServices(cfg, {**os.environ, **env})
    try:
        assert mon.start_alertmanager() is not None
        assert mon.start_prometheus(_rules(tmp_path)) is not None
        _wait(mon.alertmanager_healthy, 60, "Alertmanager")
        _wait(mon.prometheus_healthy, 60, "Prometheus")
        yield mon, slack
    finally:
        mon.stop()
        exporter.close()
        slack.close()


def test_a_firing_rule_reaches_slack_and_resolves(
    monitoring: tuple[MonitoringServices, _Server], metrics: dict[str, int]
) -> None:
    mon, slack = monitoring

    def scraped(query: str) -> list[str]:
        body = httpx.get(f"{mon.prometheus_url}/api/v1/query", params={"query": query}, timeout=5).json()
        return [r["value"][1] for r in body["data"]["result"]]

    # Scraped with no failed run first, so that the next value is an increase.
    _wait(lambda: scraped("clickstream_dagster_runs_finished_total") == ["0"], 60, "the first scrape")
    time.sleep(1)
    metrics["failed_runs"] = 1
    _wait(lambda: scraped('ALERTS{alertname="ClickstreamRunFailed"}') == ["1"], 60, "a failed run's alert")

    _wait(lambda: any(t.startswith("[FIRING") for t in _titles(slack.posts)), 60, "the firing post")
    [firing] = [a for p in slack.posts for a in p["attachments"] if a["title"].startswith("[FIRING")]
    assert firing["title"] == "[FIRING] ClickstreamExporterSourceDown (warning)"
    assert "*The exporter cannot read kafka* (firing)" in firing["text"]
    assert "The last polls failed to read kafka" in firing["text"]
    assert "alertname=ClickstreamExporterSourceDown" in firing["text"] and "source=kafka" in firing["text"]
    assert "severity=warning" in firing["text"]

    # The failed run fired too (Alertmanager holds it), but went to no receiver: Dagster's sensor posts it.
    def run_failed_received() -> bool:
        alerts = httpx.get(f"{mon.alertmanager_url}/api/v2/alerts", timeout=5).json()
        return any(
            a["labels"]["alertname"] == "ClickstreamRunFailed"
            and [r["name"] for r in a["receivers"]] == ["none"]
            for a in alerts
        )

    _wait(run_failed_received, 60, "ClickstreamRunFailed at Alertmanager")

    metrics["source_up"] = 1
    _wait(lambda: any(t.startswith("[RESOLVED") for t in _titles(slack.posts)), 60, "the resolved post")
    [resolved] = [a for p in slack.posts for a in p["attachments"] if a["title"].startswith("[RESOLVED")]
    assert resolved["title"] == "[RESOLVED] ClickstreamExporterSourceDown (warning)"
    assert "(resolved)" in resolved["text"]
    time.sleep(3)  # a group interval more: anything else routed would have been posted by now
    assert not [t for t in _titles(slack.posts) if "ClickstreamRunFailed" in t]
    assert len(_titles(slack.posts)) == 2


def test_without_a_webhook_routing_is_off(tmp_path: Path) -> None:
    """No SLACK_WEBHOOK_URL: Alertmanager runs and routes everything to no receiver (a config amtool
    accepts), and `status` says the routing is off."""
    cfg = make_test_config(tmp_path / "data", {"PATH": "/usr/bin:/bin"})
    assert cfg.slack_webhook_url is None
    mon = MonitoringServices(cfg, {})
    mon.alertmanager_dir.mkdir(parents=True)
    config = mon.alertmanager_dir / "alertmanager.yml"
    config.write_text(mon.alertmanager_config_text())
    parsed = yaml.safe_load(config.read_text())
    assert parsed["route"]["receiver"] == "none" and parsed["receivers"] == [{"name": "none"}]
    check = subprocess.run(
        ["amtool", "check-config", str(config)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    [status] = [s for s in Stack(cfg).status() if s.name == "alertmanager"]
    assert status.state == "stopped" and status.detail == "routing: off (SLACK_WEBHOOK_URL unset)"


def test_with_a_webhook_only_the_dagster_owned_alerts_are_dropped(tmp_path: Path) -> None:
    """The routing tree, as amtool reads it: failed runs to no receiver, everything else to Slack."""
    cfg = make_test_config(tmp_path / "data", {"SLACK_WEBHOOK_URL": "http://127.0.0.1:1/hook"})
    mon = MonitoringServices(cfg, {})
    mon.alertmanager_dir.mkdir(parents=True)
    config = mon.alertmanager_dir / "alertmanager.yml"
    config.write_text(mon.alertmanager_config_text())
    assert (mon.alertmanager_dir / "slack_webhook_url").read_text() == "http://127.0.0.1:1/hook"
    assert "127.0.0.1:1" not in config.read_text()  # the secret stays in its own file
    rules = yaml.safe_load(rules_file(cfg).read_text())["groups"]
    for rule in (r for g in rules for r in g["rules"]):
        labels = [f"alertname={rule['alert']}", *(f"{k}={v}" for k, v in rule["labels"].items())]
        routed = subprocess.run(
            ["amtool", "config", "routes", "test", f"--config.file={config}", *labels],
            capture_output=True,
            text=True,
            check=False,
        )
        expected = "none" if rule["alert"] == "ClickstreamRunFailed" else "slack"
        assert routed.stdout.strip() == expected, (rule["alert"], routed.stdout, routed.stderr)
