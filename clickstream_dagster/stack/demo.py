"""`clickstream demo`: the main job end to end on the embedded stack, safe to re-run.

Checks data/raw first (data/preflight.py: the real RetailRocket files if present, else generated ones; with
events.csv alone it runs without categories or item properties), starts the stack, loads the reference data
through Dagster, replays the events with the producer (resuming, so a re-run adds nothing to
the topic), waits while the daemon's Kafka sensor materializes the streaming assets, then prints a summary.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.rows import class_row

from clickstream_dagster.data.preflight import Preflight, check_raw_dir
from clickstream_dagster.data.readers import EVENTS_FILE
from clickstream_dagster.sql import demo as q
from clickstream_dagster.stack.config import StackConfig
from clickstream_dagster.stack.manager import Stack
from clickstream_dagster.stack.process import StackError

Log = Callable[[str], None]

# Generated when data/raw has no events.csv: enough for the promotion gate's evidence (its 200 validation
# visitors by default; 30,000 events leave about 75) while the demo stays a few minutes.
DEMO_EVENTS = 150_000


@dataclass(frozen=True)
class CaughtUp:
    """sql.demo.CAUGHT_UP: the topic's rows and the ledger's coverage against Kafka's last stable offsets."""

    stored: int
    quarantined: int
    windows_pending: int
    sessions_pending: int  # visitor spans loaded and not yet in sessions, the funnels and retention
    statistics_total: int
    all_events: int
    covered: int  # offsets up to the last stable offsets that the ledger covers
    offsets: int  # offsets up to the last stable offsets, from where ingestion started

    @property
    def done(self) -> bool:
        return (
            self.offsets > 0
            and self.covered >= self.offsets
            and self.windows_pending == 0
            and self.sessions_pending == 0
            and self.statistics_total == self.all_events
        )


@dataclass(frozen=True)
class DemoResult:
    counts: dict[str, int]  # rows per table (the summary's "What landed")
    serving: str  # what the API serves after the run, and why


def dagster_cli(cfg: StackConfig, args: list[str]) -> None:
    env = {**os.environ, **cfg.service_env()}
    dagster = Path(sys.executable).parent / "dagster"
    result = subprocess.run(
        [str(dagster), *args, "-m", "clickstream_dagster.definitions"],
        env=env,
        cwd=cfg.root,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise StackError(f"`dagster {' '.join(args)}` failed:\n{tail}")


def preflight(raw_dir: Path, log: Log) -> Preflight:
    """data/raw/ checked before anything starts (data/preflight.py): a dataset generated into it when it
    holds no RetailRocket file; StackError listing every missing or malformed file, with what to do, when the
    demo cannot run on it."""
    check = check_raw_dir(raw_dir)
    if check.empty:
        from clickstream_dagster.data.generator import generate

        log(f"  data: no RetailRocket files in {raw_dir}: generating a {DEMO_EVENTS:,}-event dataset there")
        summary = generate(raw_dir, DEMO_EVENTS, seed=42)
        for line in summary.lines()[:2]:
            log(f"    {line}")
        check = check_raw_dir(raw_dir)
    log(f"  data: {raw_dir}")
    for line in check.lines():
        log(f"    {line}")
    if not check.runnable:
        problems = [
            f for f in check.files if f.state == "malformed" or (f.name == EVENTS_FILE and f.state != "ok")
        ]
        listed = "\n".join(f"  {f.name}: {f.detail}\n    -> {f.hint}" for f in problems)
        raise StackError(f"the demo cannot run on {raw_dir} (nothing was started):\n{listed}")
    if not check.has_reference:
        log("    running on events.csv alone: items have no categories or properties")
    return check


def wait_until_ingested(
    cfg: StackConfig, ends: dict[int, int], log: Log, timeout_s: float = 600, topic: str | None = None
) -> None:
    """Wait for the daemon's sensor runs to cover every offset of the topic up to `ends` (each partition's
    last stable offset) in the ledger, with the windows, statistics and sessions up to date."""
    started = time.monotonic()
    last_report = 0.0
    params = {
        "topic": topic or cfg.topic,
        "partitions": sorted(ends),
        "ends": [ends[p] for p in sorted(ends)],
    }
    while True:
        with psycopg.connect(cfg.database_url) as conn, conn.cursor(row_factory=class_row(CaughtUp)) as cur:
            up = cur.execute(q.CAUGHT_UP, params).fetchone()
        assert up is not None
        done = up.done
        now = time.monotonic()
        progress = (
            f"ingested {up.covered:,}/{up.offsets:,} offsets: {up.stored:,} events stored,"
            f" {up.quarantined:,} quarantined, windows pending {up.windows_pending:,}, sessions pending"
            f" {up.sessions_pending:,}, statistics {up.statistics_total:,}/{up.all_events:,} events"
        )
        if done or now - last_report >= 5:
            last_report = now
            log(f"    {progress} [{now - started:.0f} s]")
        if done:
            return
        if now - started > timeout_s:
            raise StackError(
                f"the pipeline did not catch up within {timeout_s:.0f} s ({progress}): see the runs at "
                f"{cfg.dagster_url}/runs and `clickstream status`"
            )
        time.sleep(1)


def run_demo(cfg: StackConfig, log: Log = print, raw_dir: Path | None = None) -> DemoResult:
    """The main job on `raw_dir` (default: data/raw/ of the project). Raises StackError only on errors: a
    promotion gate that keeps the incumbent, or finds too little evidence for any model, is a result."""
    from clickstream_dagster.clients.kafka import KafkaClient
    from clickstream_dagster.producer.metrics import ProducerMetrics
    from clickstream_dagster.producer.replay import Replayer, ReplayOptions

    raw_dir = raw_dir or cfg.root / "data" / "raw"
    log("0/5 checking the data")
    check = preflight(raw_dir, log)
    stack = Stack(cfg)
    log("1/5 starting the stack")
    stack.up(log)
    log("2/5 reference data")
    if check.has_reference:
        run_config = cfg.data_dir / "demo-reference-config.json"
        run_config.write_text(_raw_dir_config(raw_dir))
        dagster_cli(cfg, ["job", "execute", "-j", "reference_data", "--config", str(run_config)])
        log("  category_tree, item_properties, items materialized")
    else:
        log("  skipped: no category tree or item properties (items have no categories or properties)")

    log("3/5 replaying events into Kafka (the Kafka sensor materializes the streaming assets as they arrive)")
    kafka = KafkaClient(bootstrap_servers=cfg.bootstrap_servers, topic=cfg.topic)
    options = ReplayOptions(
        path=raw_dir / EVENTS_FILE, topic=cfg.topic, resume=True, partitions=cfg.kafka_partitions
    )
    metrics = ProducerMetrics()
    try:
        metrics.serve(cfg.ports.producer_metrics, host=cfg.host)  # Prometheus scrapes the replay
    except OSError as exc:
        log(f"  producer metrics not served on port {cfg.ports.producer_metrics} ({exc}); replaying anyway")
    summary = Replayer(kafka, options, metrics, progress=True).run()
    for line in summary.lines():
        log(f"  {line}")
    if summary.failed:
        raise StackError("the producer could not deliver every event; re-run `make demo` to resume")
    wait_until_ingested(cfg, kafka.end_offsets(), log)

    log(
        "4/5 training the recommender (train_recommender job: every candidate competes, promotion gate, serving)"
    )
    serving = train_recommender(cfg, log)

    log("5/5 done")
    with psycopg.connect(cfg.database_url) as conn:
        counts = {}
        for name, query in q.SUMMARY.items():
            row = conn.execute(query).fetchone()
            counts[name] = int(row[0]) if row else 0
    return DemoResult(counts, serving)


def train_recommender(cfg: StackConfig, log: Log) -> str:
    """Run the training job once; what the API serves afterwards, and why. The job succeeds whatever the
    promotion gate decides (promote, keep the incumbent, or serve the popular lists while no model has the
    evidence), so a failed run is an error and stops the demo."""
    started = time.monotonic()
    dagster_cli(cfg, ["job", "execute", "-j", "train_recommender"])
    with psycopg.connect(cfg.database_url) as conn:
        latest = conn.execute(q.LATEST_SELECTED_MODEL).fetchone()
        promoted = conn.execute(q.PROMOTED_MODEL).fetchone()
    if latest is None:
        raise StackError("train_recommender succeeded but registered no model: see its run in the Dagster UI")
    version, model_type, status, reason = latest
    log(f"  model v{version} ({model_type}) {status} in {time.monotonic() - started:.0f} s: {reason}")
    if promoted is None:
        return (
            f"no model is promoted ({reason}); the API answers every visitor from the popular and trending "
            "lists until a training run on more data promotes one"
        )
    if promoted[0] == version:
        return f"model v{version} ({model_type}) promoted and served: {reason}"
    return f"model v{promoted[0]} ({promoted[1]}) stays served; this run's candidate v{version}: {reason}"


def _raw_dir_config(raw_dir: Path) -> str:
    import json

    cfg = {"config": {"raw_dir": str(raw_dir)}}
    return json.dumps({"ops": {"category_tree": cfg, "item_properties": cfg}})
