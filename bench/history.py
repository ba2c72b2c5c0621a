"""bench/history: what the pipeline pays every tick, run, poll and request, at three history sizes 100x apart.

One embedded PostgreSQL and Kafka, and Dagster's webserver on its own PostgreSQL storage (the daemon stopped:
the bench ticks the sensor itself). The history grows in place, as a deployment's does, through three sizes
(by default 20,000, 200,000 and 2,000,000 events), and at each one it is:
- events: the generated dataset in time order, loaded by the real loading transaction in batches, each
  followed by the sessions step (so every table the loads and steps keep has the same history);
- ledger ranges: one per 20 events, recorded as ingest runs record them, all but the last 180 settled, and
  merged into their checkpoint the way the sensor merges them every tick (until nothing is left to merge);
- Dagster runs: one finished `ingest_events` run per 200 events, with its tags and an event in its log.

At each size it measures, on the same machine in the same run:
- the Kafka sensor's tick (`build_kafka_sensor`, the daemon's code, on the real broker and databases);
- an ingest run's checks: a new run of 2,000 events is loaded and recorded, then its checks' queries run
  (the rows of its ranges, every rule, and the ledger's proof against the runs in flight);
- the exporter's poll (`PipelineExporter.poll`: the ledger, windows, sessions, quarantine, model, Kafka's
  offsets and Dagster's finished runs);
- the dashboard's data load (every query of its pages, and Dagster's health over GraphQL);
- the API's p99 for `GET /recommendations/{visitor}` (the live-session query runs for every visitor).
The figure is each one's growth from the smallest history to the largest; the goal is at most 1.25x.
Peer from the same run: a plain `count(*)` of clickstream_events, a cost that does grow with the history.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import psycopg
from fastapi.testclient import TestClient

from bench.pipeline import _dataset
from clickstream_dagster.analytics.sessions.update import update_sessions
from clickstream_dagster.api.app import create_app
from clickstream_dagster.assets.ingestion import RANGES_TAG, TOPIC_TAG, ledger_against_runs
from clickstream_dagster.dashboard import pipeline_health, shoppers, traffic
from clickstream_dagster.dashboard.sources import connect
from clickstream_dagster.events import MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS, ParsedEvent
from clickstream_dagster.ingestion.ledger import compact_ledger, record_range
from clickstream_dagster.ingestion.loader import LoadResult, load_and_commit
from clickstream_dagster.ingestion.ranges import OffsetRange, to_tag
from clickstream_dagster.ingestion.reader import Batch, RangeRead
from clickstream_dagster.monitoring.exporter import PipelineExporter
from clickstream_dagster.resources import PostgresResource
from clickstream_dagster.resources.kafka import KafkaResource
from clickstream_dagster.sensors.kafka import build_kafka_sensor
from clickstream_dagster.settings import libpq_url
from clickstream_dagster.sql import queries as q
from clickstream_dagster.sql import row_rules as rules
from clickstream_dagster.stack.config import Ports, StackConfig
from clickstream_dagster.stack.manager import Stack
from clickstream_dagster.stack.process import free_port

EVENTS_PER_RANGE = 20
EVENTS_PER_RUN = 200
RECENT_RANGES = 180  # the last 15 minutes of ranges at one run per 5 s: not settled, not merged
CHECK_RUN_EVENTS = 2_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", default="full", help="generated dataset scale (default: full)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--sizes", default="20000,200000,2000000", help="history sizes in events")
    parser.add_argument("--repeats", type=int, default=15, help="measurements of each figure per size")
    parser.add_argument("--requests", type=int, default=400, help="API requests per size")
    parser.add_argument(
        "--check-runs",
        type=int,
        default=5,
        help=f"ingest runs of {CHECK_RUN_EVENTS:,} events checked per size",
    )


@dataclasses.dataclass
class Figures:
    events: int
    ranges: int  # recorded (as ingest runs record them)
    ledger_rows: int  # after the checkpoints
    runs: int
    tick_ms: list[float]
    check_ms: list[float]
    poll_ms: list[float]
    dashboard_ms: list[float]
    api_ms: list[float]
    count_ms: list[float]  # the peer

    def typical(self) -> dict[str, float]:
        return {
            "sensor tick (median ms)": statistics.median(self.tick_ms),
            "ingest run checks (median ms)": statistics.median(self.check_ms),
            "exporter poll (median ms)": statistics.median(self.poll_ms),
            "dashboard data load (median ms)": statistics.median(self.dashboard_ms),
            "API p99 (ms)": float(np.percentile(self.api_ms, 99)),
            "peer: count(*) of clickstream_events (median ms)": statistics.median(self.count_ms),
        }


class History:
    """The bench's stack and the history it has grown so far."""

    def __init__(self, stack: Stack, events: pd.DataFrame, instance: dg.DagsterInstance) -> None:
        self.stack = stack
        self.cfg = stack.cfg
        self.topic = stack.cfg.topic
        self.events = events
        self.instance = instance
        self.loaded = 0  # events loaded = the next offset of partition 0
        self.ranges = 0
        self.runs = 0

    def batch(self, lo: int, hi: int) -> Batch:
        rows = self.events.iloc[lo:hi][["timestamp", "visitorid", "event", "itemid"]].itertuples(index=False)
        return Batch(
            self.topic,
            [
                ParsedEvent(int(t), int(v), str(e), int(i), 1 if e == "transaction" else None, -1, 0, lo + k)
                for k, (t, v, e, i) in enumerate(rows)
            ],
        )

    def record(self, conn: psycopg.Connection, lo: int, hi: int, run_id: str | None) -> None:
        r = OffsetRange(0, lo, hi)
        loaded = LoadResult(inserted_by_partition=Counter({0: r.size}))
        record_range(conn, self.topic, RangeRead(r, read=r.size, next_offset=hi, done=True), loaded, run_id)
        self.ranges += 1

    def plan(self, conn: psycopg.Connection) -> None:
        parts = list(range(self.cfg.kafka_partitions))
        offsets = [self.loaded if p == 0 else 0 for p in parts]
        conn.execute(q.RECORD_PLAN, {"topic": self.topic, "partitions": parts, "offsets": offsets})

    def grow(self, to: int, log: Callable[[str], None]) -> None:
        started = time.monotonic()
        with psycopg.connect(self.cfg.database_url, autocommit=True) as conn:
            while self.loaded < to:
                hi = min(self.loaded + 50_000, to)
                load_and_commit(conn, self.batch(self.loaded, hi))
                update_sessions(conn)
                for lo in range(self.loaded, hi, EVENTS_PER_RANGE):
                    self.record(conn, lo, min(lo + EVENTS_PER_RANGE, hi), None)
                self.loaded = hi
                log(
                    f"    {self.loaded:,} events, {self.ranges:,} ranges [{time.monotonic() - started:.0f} s]"
                )
            self.plan(conn)
            # Settled but for the last 15 minutes' worth; merged as the sensor merges them.
            conn.execute(
                "UPDATE ingested_ranges SET ingested_at = now() - interval '1 day' WHERE kafka_topic = %s "
                "AND ranges_merged = 1 AND start_offset < %s",
                (self.topic, self.loaded - RECENT_RANGES * EVENTS_PER_RANGE),
            )
            while compact_ledger(conn, self.topic, max_rows=100_000):
                pass
        runs = to // EVENTS_PER_RUN - self.runs
        for k in range(runs):
            lo = (self.runs + k) * EVENTS_PER_RUN
            run = self.instance.add_run(
                dg.DagsterRun(
                    job_name="ingest_events",
                    run_id=str(uuid.uuid4()),
                    status=dg.DagsterRunStatus.SUCCESS,
                    tags={
                        TOPIC_TAG: self.topic,
                        RANGES_TAG: to_tag([OffsetRange(0, lo, lo + EVENTS_PER_RUN)]),
                    },
                )
            )
            self.instance.report_engine_event("ingested", run)
        self.runs += runs
        log(
            f"    history of {self.loaded:,} events ready: {self.runs:,} runs [{time.monotonic() - started:.0f} s]"
        )

    def ledger_rows(self) -> int:
        with psycopg.connect(self.cfg.database_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM ingested_ranges WHERE kafka_topic = %s", (self.topic,)
            ).fetchone()
        return int(row[0]) if row else 0


def _timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def measure(h: History, repeats: int, requests: int, check_runs: int) -> Figures:
    cfg = h.cfg
    history = h.loaded
    postgres = PostgresResource(url=cfg.database_url)
    kafka = KafkaResource(bootstrap_servers=cfg.bootstrap_servers, topic=h.topic)
    sensor = build_kafka_sensor()
    cursor = json.dumps({str(p): (h.loaded if p == 0 else 0) for p in range(cfg.kafka_partitions)})

    def tick() -> None:
        with dg.build_sensor_context(
            instance=h.instance, cursor=cursor, resources={"kafka": kafka, "postgres": postgres}
        ) as context:
            result = sensor(context)
        assert isinstance(result, dg.SkipReason), result  # nothing new in the (empty) topic; no gap

    tick_ms = [_timed(tick) for _ in range(repeats)]

    check_ms = []
    check_parts: list[tuple[float, float]] = []
    with psycopg.connect(cfg.database_url, autocommit=True) as conn:
        for _ in range(check_runs):
            # A new run: its events loaded, its range recorded, the plan moved past it (as the sensor does).
            lo, hi = h.loaded, h.loaded + CHECK_RUN_EVENTS
            run_id = f"bench-check-{lo}"
            load_and_commit(conn, h.batch(lo, hi))
            h.record(conn, lo, hi, run_id)
            h.loaded = hi
            h.plan(conn)
            params = {"run_id": run_id, "min_ts": MIN_TIMESTAMP_MS, "max_ts": MAX_TIMESTAMP_MS}

            def run_ranges(params: dict[str, Any] = params) -> None:
                cur = conn.execute(rules.CHECK_RUN_RANGES, params)
                ranges = cur.fetchall()
                stored = [d.name for d in cur.description or []].index("stored")
                assert len(ranges) == 1 and ranges[0][stored] == CHECK_RUN_EVENTS, ranges

            def ledger(run_id: str = run_id) -> None:
                found = ledger_against_runs(conn, h.instance, h.topic, exclude_run_id=run_id)
                assert not found.gaps and not found.overlaps, found

            parts = (_timed(run_ranges), _timed(ledger))
            check_parts.append(parts)
            check_ms.append(sum(parts))
        update_sessions(conn)
    print(
        "    run checks (median ms): the run's ranges "
        f"{statistics.median(p[0] for p in check_parts):.1f}, the ledger against the runs "
        f"{statistics.median(p[1] for p in check_parts):.1f}",
        flush=True,
    )
    cursor = json.dumps({str(p): (h.loaded if p == 0 else 0) for p in range(cfg.kafka_partitions)})

    exporter = PipelineExporter(cfg.database_url, cfg.bootstrap_servers, cfg.dagster_url, [h.topic])
    exporter.poll()
    poll_ms = [_timed(exporter.poll) for _ in range(repeats)]
    snap = exporter.poll()
    assert snap.up == {"postgres": True, "kafka": True, "dagster": True}, snap.up

    sources = connect(libpq_url(cfg.database_url), cfg.dagster_url)

    db = sources.events

    def dagster_health() -> None:
        assert pipeline_health.dagster_health(sources.dagster).available

    loaders: dict[str, Callable[[], Any]] = {
        "traffic.totals": lambda: traffic.totals(db),
        "traffic.event_statistics": lambda: traffic.event_statistics(db),
        "traffic.hourly_pattern": lambda: traffic.hourly_pattern(db),
        # each page's default range
        "traffic.windowed_stats": lambda: traffic.windowed_stats(db, next(iter(traffic.WINDOW_RANGES))),
        "traffic.windowed_summary": lambda: traffic.windowed_summary(db),
        "traffic.top_items": lambda: traffic.top_items(db),
        "shoppers.funnel": lambda: shoppers.funnel(db),
        "shoppers.sessions_over_time": lambda: shoppers.sessions_over_time(
            db, next(iter(shoppers.SESSION_RANGES))
        ),
        "shoppers.retention": lambda: shoppers.retention(db),
        "shoppers.top_items": lambda: shoppers.top_items(db),
        "shoppers.categories": lambda: shoppers.categories(db),
        "pipeline_health.quarantine_by_reason": lambda: pipeline_health.quarantine_by_reason(db),
        "pipeline_health.reconciliation": lambda: pipeline_health.reconciliation(db),
        "pipeline_health.dagster_health": dagster_health,
    }
    per_loader: dict[str, list[float]] = {name: [] for name in loaders}

    def dashboard() -> None:
        for name, load in loaders.items():
            per_loader[name].append(_timed(load))

    dashboard()
    per_loader = {name: [] for name in loaders}
    dashboard_ms = [_timed(dashboard) for _ in range(repeats)]
    sources.close()
    print(
        "    dashboard loaders (median ms): "
        + ", ".join(f"{name} {statistics.median(ms):.1f}" for name, ms in per_loader.items()),
        flush=True,
    )

    visitors = h.events.iloc[: h.loaded]["visitorid"].sample(requests, random_state=len(h.events)).tolist()
    with TestClient(create_app(cfg.database_url)) as client:
        for v in visitors[:20]:
            assert client.get(f"/recommendations/{v}").status_code == 200
        api_ms = []
        for v in visitors:
            started = time.perf_counter()
            response = client.get(f"/recommendations/{v}")
            api_ms.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.text

    with psycopg.connect(cfg.database_url) as conn:
        count_ms = [
            _timed(lambda: conn.execute("SELECT count(*) FROM clickstream_events").fetchone())
            for _ in range(5)
        ]
    return Figures(
        history,
        h.ranges,
        h.ledger_rows(),
        h.runs,
        tick_ms,
        check_ms,
        poll_ms,
        dashboard_ms,
        api_ms,
        count_ms,
    )


POPULAR = """
INSERT INTO popular_items (list, rank, itemid, score, visitors, recent_events, earlier_events, trend, model_version)
SELECT l, r, r, 1.0 / r, 1, 1, 1, 1.0, 0 FROM unnest(ARRAY['popular', 'trending']) l, generate_series(1, 100) r
"""


def run(args: argparse.Namespace) -> int:
    sizes = [int(s) for s in args.sizes.split(",")]
    need = max(sizes) + len(sizes) * args.check_runs * CHECK_RUN_EVENTS
    frame = pd.read_csv(
        _dataset(args.scale, args.seed), usecols=["timestamp", "visitorid", "event", "itemid"]
    )
    events = frame.sort_values("timestamp", kind="stable").head(need).reset_index(drop=True)
    if len(events) < need:
        raise SystemExit(f"the dataset holds {len(events):,} events; these sizes need {need:,}")
    data_dir = Path(tempfile.mkdtemp(prefix="bench-history-"))
    cfg = StackConfig.from_env({}).with_data_dir(
        data_dir, Ports(*(free_port() for _ in dataclasses.fields(Ports)))
    )
    cfg = dataclasses.replace(cfg, topic="bench-history")
    stack = Stack(cfg)
    results: list[Figures] = []
    try:
        print("starting PostgreSQL, Kafka and Dagster's webserver ...", flush=True)
        stack.up_data_services(log=lambda m: print(m, flush=True))
        stack.dagster.start()
        stack.dagster.daemon.stop()  # the bench ticks the sensor itself
        with psycopg.connect(cfg.database_url) as conn:
            conn.execute(POPULAR)
        with dg.DagsterInstance.from_config(str(cfg.dagster_home)) as instance:
            history = History(stack, events, instance)
            for size in sizes:
                print(f"growing the history to {size:,} events ...", flush=True)
                history.grow(size, log=lambda m: print(m, flush=True))
                print(f"measuring at {history.loaded:,} events ...", flush=True)
                results.append(measure(history, args.repeats, args.requests, args.check_runs))
                for name, value in results[-1].typical().items():
                    print(f"    {name}: {value:.1f}", flush=True)
    finally:
        stack.down(log=lambda _m: None)
    print("\n== bench/history ==")
    header = f"{'':52}" + "".join(f"{r.events:>14,}" for r in results) + "    growth"
    print(header + "\n" + f"{'events in history':52}" + "".join(f"{r.events:>14,}" for r in results))
    for label, attr in (
        ("ledger ranges recorded", "ranges"),
        ("ledger rows (checkpoints)", "ledger_rows"),
        ("Dagster runs", "runs"),
    ):
        print(f"{label:52}" + "".join(f"{getattr(r, attr):>14,}" for r in results))
    worst = ("", 0.0)
    first, last = results[0].typical(), results[-1].typical()
    for name in first:
        growth = last[name] / first[name]
        print(f"{name:52}" + "".join(f"{r.typical()[name]:>14.1f}" for r in results) + f"    {growth:.2f}x")
        if not name.startswith("peer") and growth > worst[1]:
            worst = (name, growth)
    print(
        f"history: sizes {results[0].events:,}..{results[-1].events:,} events, worst growth {worst[1]:.2f}x "
        f"({worst[0]})"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench history")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
