"""A real Prometheus scraping the whole running stack (`clickstream up` starts it with the exporter): a replay
through the producer CLI, the daemon's runs ingesting it, and the figures moving in Prometheus's HTTP API."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from clickstream_dagster.clients.kafka import KafkaClient
from clickstream_dagster.data.generator import generate
from clickstream_dagster.stack.demo import wait_until_ingested
from clickstream_dagster.stack.manager import Stack
from tests.conftest import make_test_config, running_stack
from tests.stack.test_faults import EXTERNAL

pytestmark = pytest.mark.slow

FAST = {"CLICKSTREAM_PROMETHEUS_SCRAPE_INTERVAL": "1s", "CLICKSTREAM_EXPORTER_INTERVAL_SECONDS": "1"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with pytest.MonkeyPatch.context() as patch:
        for key, value in FAST.items():
            patch.setenv(key, value)
        env = {k: v for k, v in os.environ.items() if k not in EXTERNAL}
        with running_stack(make_test_config(tmp_path_factory.mktemp("prometheus") / "data", env)) as stack:
            yield stack


def _query(stack: Stack, promql: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{stack.monitoring.prometheus_url}/api/v1/query", params={"query": promql}, timeout=10)
    r.raise_for_status()
    return r.json()["data"]["result"]


def _range(stack: Stack, promql: str, start: float, end: float) -> list[float]:
    r = httpx.get(
        f"{stack.monitoring.prometheus_url}/api/v1/query_range",
        params={"query": promql, "start": start, "end": end, "step": "1s"},
        timeout=10,
    )
    r.raise_for_status()
    result = r.json()["data"]["result"]
    assert len(result) == 1, (promql, result)
    return [float(v) for _t, v in result[0]["values"]]


def _eventually(check: Any, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(1)


def test_a_replay_moves_lag_and_ingest_rate_in_prometheus(stack: Stack, tmp_path: Path) -> None:
    cfg = stack.cfg
    assert stack.monitoring.prometheus.running(), "prometheus is not installed: run scripts/install-system.sh"
    rules = httpx.get(f"{stack.monitoring.prometheus_url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert sum(len(g["rules"]) for g in rules) == 9  # prometheus/alerts.yml, loaded
    assert _eventually(lambda: len(_query(stack, "up == 1")) >= 2)  # the exporter and the API answer

    generate(tmp_path, 12_000, seed=9)
    started = time.time()
    producer = subprocess.run(
        [sys.executable, "-m", "clickstream_dagster.cli", "produce", "--file", str(tmp_path / "events.csv"),
         "--topic", cfg.topic, "--messages-per-second", "1500", "--metrics-port", str(cfg.ports.producer_metrics)],
        env={**os.environ, **cfg.service_env()}, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert producer.returncode == 0, producer.stderr
    kafka = KafkaClient(bootstrap_servers=cfg.bootstrap_servers, topic=cfg.topic)
    ends = kafka.end_offsets()
    wait_until_ingested(cfg, ends, log=lambda _m: None, timeout_s=300)
    with psycopg.connect(cfg.database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM clickstream_events WHERE kafka_topic = %s", (cfg.topic,)
        ).fetchone()
    stored = int(row[0]) if row else 0
    assert stored > 11_000

    topic = f'topic="{cfg.topic}"'
    # Prometheus has scraped the caught-up state: the ingested total is what PostgreSQL holds, the lag 0.
    assert _eventually(
        lambda: (
            [
                float(r["value"][1])
                for r in _query(stack, f"clickstream_pipeline_events_ingested_total{{{topic}}}")
            ]
            == [stored]
        )
    )
    assert _eventually(
        lambda: (
            [
                float(r["value"][1])
                for r in _query(stack, f"sum(clickstream_pipeline_consumer_lag_offsets{{{topic}}})")
            ]
            == [0.0]
        )
    )
    time.sleep(3)  # a few more scrapes of the caught-up state, so the range's last steps hold it
    end = time.time()
    lag = _range(stack, f"sum(clickstream_pipeline_consumer_lag_offsets{{{topic}}})", started, end)
    assert max(lag) > 0 and lag[-1] == 0, lag  # lag rose during the replay and came back to 0
    rate = _range(
        stack, f"sum(rate(clickstream_pipeline_events_ingested_total{{{topic}}}[5s]))", started, end
    )
    assert max(rate) > 100, rate  # events per second while the runs ingested
    ingested = _range(stack, f"clickstream_pipeline_events_ingested_total{{{topic}}}", started, end)
    assert ingested[0] < stored and ingested[-1] == stored
    # The producer's own counter (scraped while it ran) and the runs the exporter saw finish.
    sent = _range(stack, "clickstream_producer_messages_sent_total", started, end)
    up = _range(stack, 'up{job="clickstream-producer"}', started, end)
    rising = [v for v in sent if 0 < v < 12_000]
    assert len(rising) >= 3, (sent, up)  # scraped mid-replay: the counter follows the acknowledgements
    runs = _eventually(
        lambda: _query(
            stack, 'clickstream_dagster_runs_finished_total{dagster_job="ingest_events",status="SUCCESS"}'
        )
    )
    assert runs and float(runs[0]["value"][1]) >= 1, (
        _query(stack, "clickstream_dagster_runs_finished_total"),
        _query(stack, "clickstream_exporter_source_up"),
        stack.monitoring.exporter.log_tail(),
    )
    assert _query(stack, "clickstream_dagster_run_duration_seconds_count")
