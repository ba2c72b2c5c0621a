"""The pipeline's Prometheus metrics: Kafka's offsets beside the ledger, ingest and quarantine totals,
windowed_stats' freshness, ledger gaps, Dagster's finished runs and steps, and the served model.

`PipelineExporter.poll()` reads everything once (PostgreSQL: sql/monitoring.py and the ledger's gap query;
Kafka: each partition's last stable offset; Dagster: its GraphQL API through clients/dagster.py) and
keeps a snapshot; a scrape returns the latest snapshot (`collect`), so scrapes stay fast and a slow source
never blocks them. `serve()` polls every `interval_s` in a thread and answers /metrics.

Naming follows Prometheus' conventions: `clickstream_` prefix, base units (seconds, offsets), `_total` for
counters. Totals that live in PostgreSQL (events stored, quarantined) are exported as counters with the
stored value: they only grow, and `rate()` gives events per second. Run and step durations are histograms
fed by each run that finishes while the exporter runs (a restart starts them afresh, as any counter).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg.rows import class_row

from clickstream_dagster.clients.dagster import DagsterError, DagsterWebserver, graphql_result
from clickstream_dagster.clients.dagster_queries import FINISHED_RUNS
from clickstream_dagster.clients.kafka import KafkaClient
from clickstream_dagster.ingestion.ledger import gap_offsets_behind, ledger_spans
from clickstream_dagster.settings import redact_url
from clickstream_dagster.sql import monitoring as q

logger = logging.getLogger(__name__)

DURATION_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 7200)
RUNS_PER_POLL = 500


@dataclass(frozen=True)
class LedgerRow:
    """One partition's ledger (sql.monitoring.LEDGER)."""

    topic: str
    partition: int
    read_to: int  # the furthest range end (the plan's first offset before any range)
    stored: int
    quarantined: int
    skipped: int
    lost: int
    first_offset: int | None
    planned_to: int | None


@dataclass(frozen=True)
class WindowsRow:
    """windowed_stats' freshness (sql.monitoring.WINDOWS)."""

    newest_event: datetime | None
    newest_window_end: datetime | None
    last_write: datetime | None
    pending: int


@dataclass(frozen=True)
class SessionsRow:
    """The sessions step's freshness (sql.monitoring.SESSIONS)."""

    pending_spans: int
    oldest_pending_seconds: float
    sessions: int | None


@dataclass(frozen=True)
class ModelRow:
    """The promoted model (sql.monitoring.PROMOTED_MODEL)."""

    version: int
    model_type: str
    decided_at: Decimal | float | None  # epoch seconds
    validation: dict[str, Any] | None  # its own validation metrics, by name


@dataclass
class Snapshot:
    """What one poll read; every field empty or None when its source could not be read."""

    end_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    ledger: list[LedgerRow] = field(default_factory=list)
    gaps: dict[tuple[str, int], int] = field(default_factory=dict)  # offsets behind the read point
    windows: WindowsRow | None = None
    sessions: SessionsRow | None = None
    quarantine: list[tuple[Any, ...]] = field(default_factory=list)
    model: ModelRow | None = None
    up: dict[str, bool] = field(default_factory=dict)
    polled_at: float = 0.0
    poll_seconds: float = 0.0


class PipelineExporter(Collector):
    def __init__(
        self,
        database_url: str,
        bootstrap_servers: str,
        dagster_url: str | None,
        topics: Iterable[str] = (),
        *,
        registry: CollectorRegistry | None = None,
        since: float | None = None,
    ) -> None:
        self.database_url = database_url
        self.kafka = KafkaClient(bootstrap_servers=bootstrap_servers)
        self.dagster_url = dagster_url.rstrip("/") if dagster_url else None
        # The shared GraphQL client; it is not held back after a failure, since a poll is every few seconds.
        self._dagster = (
            DagsterWebserver(
                self.dagster_url, read_timeout_s=10.0, retry_after_s=0.0, user_agent="clickstream-exporter"
            )
            if self.dagster_url
            else None
        )
        self.topics = tuple(topics)
        self.registry = registry or CollectorRegistry()
        self._snapshot = Snapshot()
        self._lock = threading.Lock()
        self._runs_after = time.time() if since is None else since  # runs finished before start: not counted
        self._seen_runs: dict[str, float] = {}
        r = self.registry
        self.runs_finished = Counter(
            "clickstream_dagster_runs_finished",
            "Dagster runs that finished while the exporter ran, by job and status",
            ["dagster_job", "status"],  # not `job`: Prometheus' own target label
            registry=r,
        )
        self.run_seconds = Histogram(
            "clickstream_dagster_run_duration_seconds",
            "Duration of finished Dagster runs, start to end",
            ["dagster_job"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.step_seconds = Histogram(
            "clickstream_dagster_step_duration_seconds",
            "Duration of the steps of finished Dagster runs",
            ["dagster_job", "step"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        r.register(self)

    # ---- reading -------------------------------------------------------------------------------------

    def poll(self) -> Snapshot:
        started = time.perf_counter()
        snap = Snapshot()
        topics = set(self.topics)
        try:
            with psycopg.connect(self.database_url, connect_timeout=5) as conn:
                with conn.cursor(row_factory=class_row(LedgerRow)) as cur:
                    snap.ledger = cur.execute(q.LEDGER).fetchall()
                topics |= {row.topic for row in snap.ledger}
                for topic in sorted({row.topic for row in snap.ledger}):
                    read_to = {row.partition: int(row.read_to) for row in snap.ledger if row.topic == topic}
                    spans = ledger_spans(conn, topic)
                    for partition in sorted({s.partition for s in spans}):
                        behind = gap_offsets_behind(
                            [s for s in spans if s.partition == partition], read_to.get(partition, 0)
                        )
                        if behind > 0:
                            snap.gaps[topic, partition] = behind
                with conn.cursor(row_factory=class_row(WindowsRow)) as cur:
                    snap.windows = cur.execute(q.WINDOWS).fetchone()
                with conn.cursor(row_factory=class_row(SessionsRow)) as cur:
                    snap.sessions = cur.execute(q.SESSIONS).fetchone()
                snap.quarantine = conn.execute(q.QUARANTINE).fetchall()
                with conn.cursor(row_factory=class_row(ModelRow)) as cur:
                    snap.model = cur.execute(q.PROMOTED_MODEL).fetchone()
            snap.up["postgres"] = True
        except psycopg.Error as exc:
            logger.warning("PostgreSQL at %s: %s", redact_url(self.database_url), exc)
            snap.up["postgres"] = False
        try:
            for topic in sorted(topics):
                for partition, offset in self.kafka.end_offsets(topic, timeout_ms=5_000).items():
                    snap.end_offsets[topic, partition] = offset
            snap.up["kafka"] = True
        except Exception as exc:  # kafka-python raises many types; the exporter reports, never dies
            logger.warning("Kafka at %s: %s", self.kafka.bootstrap_servers, exc)
            snap.up["kafka"] = False
        if self.dagster_url:
            try:
                self._observe_runs()
                snap.up["dagster"] = True
            except (DagsterError, ValueError, KeyError) as exc:
                logger.warning("Dagster at %s: %s", self.dagster_url, exc)
                snap.up["dagster"] = False
        snap.polled_at = time.time()
        snap.poll_seconds = time.perf_counter() - started
        with self._lock:
            self._snapshot = snap
        return snap

    def _observe_runs(self) -> None:
        assert self._dagster is not None
        data = self._dagster.query(FINISHED_RUNS, {"updatedAfter": self._runs_after, "limit": RUNS_PER_POLL})
        runs = graphql_result(data, "runsOrError", "Runs", self._dagster.address)
        assert runs is not None
        for run in sorted(runs["results"], key=lambda r: r["updateTime"] or 0):
            if run["runId"] in self._seen_runs:
                continue
            self._seen_runs[run["runId"]] = run["updateTime"] or 0
            job, status = run["jobName"], run["status"]
            self.runs_finished.labels(job, status).inc()
            if run["startTime"] and run["endTime"]:
                self.run_seconds.labels(job).observe(max(0.0, run["endTime"] - run["startTime"]))
            for step in run["stepStats"]:
                if step["startTime"] and step["endTime"]:
                    self.step_seconds.labels(job, step["stepKey"]).observe(
                        max(0.0, step["endTime"] - step["startTime"])
                    )
        if self._seen_runs:
            # Ask from a minute before the newest update seen (runs updated in the same instant are kept
            # apart by id); forget ids older than that window so the set stays small.
            self._runs_after = max(self._runs_after, max(self._seen_runs.values()) - 60)
            self._seen_runs = {k: v for k, v in self._seen_runs.items() if v >= self._runs_after}

    # ---- exposing ------------------------------------------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        return []  # families depend on the data: collected at scrape time only

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snap = self._snapshot
        yield from _offsets(snap)
        yield from _totals(snap)
        yield from _windows(snap)
        yield from _sessions(snap)
        yield from _model(snap)
        up = GaugeMetricFamily(
            "clickstream_exporter_source_up", "1 when the last poll read this source", labels=["source"]
        )
        for source, ok in sorted(snap.up.items()):
            up.add_metric([source], 1.0 if ok else 0.0)
        yield up
        yield GaugeMetricFamily(
            "clickstream_exporter_last_poll_timestamp_seconds",
            "When the last poll ended",
            value=snap.polled_at,
        )
        yield GaugeMetricFamily(
            "clickstream_exporter_poll_duration_seconds",
            "How long the last poll took",
            value=snap.poll_seconds,
        )

    def serve(self, port: int, host: str = "127.0.0.1", interval_s: float = 5.0) -> threading.Thread:
        """/metrics on host:port, and a daemon thread polling every `interval_s` (the first poll done)."""
        self.poll()
        start_http_server(port, addr=host, registry=self.registry)

        def loop() -> None:
            while True:
                time.sleep(interval_s)
                try:
                    self.poll()
                except Exception:  # keep serving the previous snapshot
                    logger.exception("poll failed")

        thread = threading.Thread(target=loop, name="clickstream-exporter", daemon=True)
        thread.start()
        return thread


def _offsets(snap: Snapshot) -> Iterator[Metric]:
    labels = ["topic", "partition"]
    end = GaugeMetricFamily(
        "clickstream_kafka_end_offset",
        "Kafka's last stable offset per partition (read_committed)",
        labels=labels,
    )
    read = GaugeMetricFamily(
        "clickstream_pipeline_read_offset", "Where the ledger has read each partition up to", labels=labels
    )
    lag = GaugeMetricFamily(
        "clickstream_pipeline_consumer_lag_offsets",
        "Kafka's last stable offset minus the ledger's read offset, per partition (offsets, not messages: "
        "transaction markers take offsets too)",
        labels=labels,
    )
    gaps = GaugeMetricFamily(
        "clickstream_pipeline_ledger_gap_offsets",
        "Offsets behind the read offset that no ledger range covers (the sensor repairs them; lasting ones are lost)",
        labels=labels,
    )
    unread = GaugeMetricFamily(
        "clickstream_pipeline_planned_unread_offsets",
        "Offsets the sensor has requested that no run has ingested yet (in flight)",
        labels=labels,
    )
    read_to = {(row.topic, row.partition): int(row.read_to) for row in snap.ledger}
    planned = {
        (row.topic, row.partition): int(row.planned_to) for row in snap.ledger if row.planned_to is not None
    }
    keys = sorted(set(snap.end_offsets) | set(read_to))
    for key in keys:
        values = [key[0], str(key[1])]
        if key in snap.end_offsets:
            end.add_metric(values, snap.end_offsets[key])
        if key in read_to:
            read.add_metric(values, read_to[key])
            gaps.add_metric(values, snap.gaps.get(key, 0))
        if key in planned and key in read_to:
            unread.add_metric(values, max(0, planned[key] - read_to[key]))
        if key in snap.end_offsets:
            lag.add_metric(values, max(0, snap.end_offsets[key] - read_to.get(key, 0)))
    yield from (end, read, lag, gaps, unread)


def _totals(snap: Snapshot) -> Iterator[Metric]:
    stored = CounterMetricFamily(
        "clickstream_pipeline_events_ingested",
        "Kafka messages stored in clickstream_events",
        labels=["topic"],
    )
    quarantined = CounterMetricFamily(
        "clickstream_pipeline_events_quarantined",
        "Kafka messages quarantined by raw_events",
        labels=["topic"],
    )
    skipped = CounterMetricFamily(
        "clickstream_pipeline_offsets_skipped",
        "Offsets that held no message (transaction markers, aborted records, compaction)",
        labels=["topic"],
    )
    lost = CounterMetricFamily(
        "clickstream_pipeline_offsets_lost",
        "Offsets deleted by retention before they were read",
        labels=["topic"],
    )
    per_topic: dict[str, list[int]] = {}
    for row in snap.ledger:
        sums = per_topic.setdefault(row.topic, [0, 0, 0, 0])
        for i, n in enumerate((row.stored, row.quarantined, row.skipped, row.lost)):
            sums[i] += int(n)
    for topic, (s, qn, sk, lo) in sorted(per_topic.items()):
        stored.add_metric([topic], s)
        quarantined.add_metric([topic], qn)
        skipped.add_metric([topic], sk)
        lost.add_metric([topic], lo)
    rows = GaugeMetricFamily(
        "clickstream_quarantine_rows",
        "Rows in the quarantine table, by source (kafka, csv)",
        labels=["source"],
    )
    for source, n in snap.quarantine:
        rows.add_metric([source], int(n))
    yield from (stored, quarantined, skipped, lost, rows)


def _windows(snap: Snapshot) -> Iterator[Metric]:
    if snap.windows is None:
        return
    w = snap.windows
    if w.newest_event is not None:
        behind = 0.0
        if w.newest_window_end is None:
            behind = float("inf")
        elif w.newest_event >= w.newest_window_end:
            behind = (w.newest_event - w.newest_window_end).total_seconds()
        yield GaugeMetricFamily(
            "clickstream_windowed_stats_freshness_seconds",
            "Event time of the newest event minus the end of the newest window (0: the windows cover it)",
            value=behind,
        )
        yield GaugeMetricFamily(
            "clickstream_newest_event_timestamp_seconds", "Event time of the newest stored event",
            value=w.newest_event.timestamp(),
        )  # fmt: skip
    if w.last_write is not None:
        yield GaugeMetricFamily(
            "clickstream_windowed_stats_last_write_timestamp_seconds", "When a window was last written",
            value=w.last_write.timestamp(),
        )  # fmt: skip
    yield GaugeMetricFamily(
        "clickstream_windowed_stats_pending_windows", "Windows waiting to be recomputed", value=int(w.pending)
    )


def _sessions(snap: Snapshot) -> Iterator[Metric]:
    if snap.sessions is None:
        return
    s = snap.sessions
    yield GaugeMetricFamily(
        "clickstream_sessions_pending_spans",
        "Visitor spans loaded and not yet applied to sessions, the funnels and retention",
        value=int(s.pending_spans),
    )
    yield GaugeMetricFamily(
        "clickstream_sessions_oldest_pending_seconds",
        "How long the oldest loaded span has waited for the sessions step (0: sessions cover every event)",
        value=float(s.oldest_pending_seconds),
    )
    if s.sessions is not None:
        yield GaugeMetricFamily("clickstream_sessions", "Visitor sessions stored", value=int(s.sessions))


def _model(snap: Snapshot) -> Iterator[Metric]:
    version = GaugeMetricFamily(
        "clickstream_model_promoted_version", "The promoted model's version (0: none)"
    )
    if snap.model is None:
        if snap.up.get("postgres"):
            version.add_metric([], 0)
            yield version
        return
    m = snap.model
    version.add_metric([], int(m.version))
    yield version
    info = GaugeMetricFamily(
        "clickstream_model_promoted_info", "The promoted model (always 1)", labels=["version", "model_type"]
    )
    info.add_metric([str(m.version), str(m.model_type)], 1)
    yield info
    if m.decided_at is not None:
        yield GaugeMetricFamily(
            "clickstream_model_promoted_timestamp_seconds",
            "When the model was promoted",
            value=float(m.decided_at),
        )
    metric = GaugeMetricFamily(
        "clickstream_model_validation_metric", "The promoted model's validation metrics", labels=["metric"]
    )
    for name, value in sorted((m.validation or {}).items()):
        if isinstance(value, int | float) and not isinstance(value, bool):
            metric.add_metric([name], float(value))
    yield metric
