"""Fill a migrated database with real data for the dashboard tests, in a few seconds, without Kafka or Spark.

Events come from the project's generator and CSV reader. They are written with binary COPY straight into
the tables the dashboard reads (the ingestion internals are free to change; these tables are the contract),
with the aggregates computed exactly here. Reference data goes through the reference assets themselves.
A real Dagster instance (PostgreSQL storage, served to the dashboard by a real webserver) gets real runs of a
stand-in `raw_events` asset that reports the same metadata keys.
"""

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import psycopg

from clickstream_dagster.analytics.sessions.update import update_sessions
from clickstream_dagster.assets.reference import RawFilesConfig, category_tree, item_properties, items
from clickstream_dagster.data.generator import generate
from clickstream_dagster.data.readers import EVENTS_FILE, RowError, iter_events
from clickstream_dagster.resources import PostgresResource
from tests.helpers import event_months

TOPIC = "clickstream"
PARTITIONS = 3
WINDOW_MS = 300_000
# Quarantined messages with reasons worded as raw_events words them ("<kind>: <detail>").
BAD_MESSAGES: list[tuple[bytes | None, str]] = [
    (b"this is not json", "not JSON: Expecting value"),
    (b'{"v":1,"timestamp":1433000000000,"event":"view","itemid":1}', "missing field: visitorid"),
    (b'{"v":1,"timestamp":1433000000000,"visitorid":1,"event":"click","itemid":1}', "unknown event: click"),
    (b'{"v":1,"timestamp":1433000000000,"visitorid":2,"event":"tap","itemid":1}', "unknown event: tap"),
    (None, "empty message: null value"),
]

COPY_EVENTS = """
COPY clickstream_events ("timestamp", event_time, visitorid, event, itemid, transactionid, produced_at,
                         kafka_topic, kafka_partition, kafka_offset) FROM STDIN (FORMAT BINARY)
"""
EVENT_TYPES_SQL = (
    "int8",
    "timestamptz",
    "int8",
    "text",
    "int8",
    "int8",
    "timestamptz",
    "text",
    "int4",
    "int8",
)
COPY_QUARANTINE = """
COPY quarantine (source, kafka_topic, kafka_partition, kafka_offset, raw_payload, reason) FROM STDIN (FORMAT BINARY)
"""
QUARANTINE_TYPES_SQL = ("text", "text", "int4", "int8", "bytea", "text")
QUEUE_EVERY_VISITOR = """
INSERT INTO session_changes (visitorid, first_ms, last_ms)
SELECT visitorid, min("timestamp"), max("timestamp") FROM clickstream_events GROUP BY visitorid
"""
INSERT_RANGE = """
INSERT INTO ingested_ranges (kafka_topic, kafka_partition, start_offset, end_offset, messages_read, rows_inserted,
                             rows_quarantined, dagster_run_id)
VALUES (%s, %s, 0, %s, %s, %s, %s, 'filler')
"""
COPY_WINDOWS = """
COPY windowed_stats (window_start, window_end, event, event_count, unique_users, unique_items)
FROM STDIN (FORMAT BINARY)
"""
WINDOW_TYPES_SQL = ("timestamptz", "timestamptz", "text", "int8", "int8", "int8")
INSERT_EVENT_STATISTICS = """
INSERT INTO event_statistics (event, event_count, unique_users, unique_items, last_event_time)
VALUES (%s, %s, %s, %s, %s)
"""
MODEL_VERSIONS = 3
PROMOTED_VERSION = 3
RECOMMENDED_VISITORS = 12
RECOMMENDATIONS_EACH = 10
LAGS = (1800, 650, 0)  # consumer lag reported by the three stand-in raw_events runs, oldest first
RAW_EVENTS_MESSAGES = 1000  # messages each stand-in raw_events run reports as read
RAW_EVENTS_QUARANTINED = 1
WINDOWED_STATS_ROWS = 42

INSERT_REGISTRY = """
INSERT INTO model_registry (model_type, params, data_window, cleaning, metrics, library_versions, artefact,
                            artefact_sha256, status, reason, trained_at, decided_at)
VALUES ('lightfm', %(params)s, %(window)s, %(cleaning)s, %(metrics)s, %(libs)s, %(artefact)s, %(sha)s,
        %(status)s, %(reason)s, now() - make_interval(hours => %(age)s), now() - make_interval(hours => %(age)s))
"""
INSERT_RECOMMENDATION = """
INSERT INTO recommendations (visitorid, rank, itemid, score, model_version) VALUES (%s, %s, %s, %s, %s)
"""
INSERT_POPULAR = """
INSERT INTO popular_items (list, rank, itemid, score, visitors, recent_events, earlier_events, trend, model_version)
VALUES ('popular', %s, %s, %s, %s, %s, %s, 0, %s)
"""


@dataclass
class Filled:
    url: str
    events: pd.DataFrame  # timestamp, visitorid, event, itemid, transactionid
    quarantined: int
    reasons: Counter[str] = field(default_factory=Counter)
    recommended: list[int] = field(default_factory=list)  # visitors with recommendations
    popular: list[int] = field(default_factory=list)  # popular_items, by rank
    categories: dict[int, int] = field(default_factory=dict)  # itemid -> categoryid, as the sessions saw them

    @property
    def counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.events["event"].value_counts().items()}


def _events(raw_dir: Path) -> pd.DataFrame:
    rows = []
    for _, parsed in iter_events(raw_dir / EVENTS_FILE):
        assert not isinstance(parsed, RowError), parsed
        rows.append((parsed.timestamp, parsed.visitorid, parsed.event, parsed.itemid, parsed.transactionid))
    return pd.DataFrame(rows, columns=["timestamp", "visitorid", "event", "itemid", "transactionid"])


def _copy(
    cur: psycopg.Cursor[Any], copy_sql: str, types: tuple[str, ...], rows: Iterable[tuple[Any, ...]]
) -> None:
    with cur.copy(copy_sql) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


def _ingest(conn: psycopg.Connection, events: pd.DataFrame) -> tuple[int, Counter[str]]:
    """Events as raw_events stores them (partitioned by visitor, as the producer keys them), the quarantined
    messages, and one ledger range per partition that reconciles."""
    now = datetime.now(UTC)
    partition = (events["visitorid"] % PARTITIONS).astype("int64")
    offset = events.groupby(partition).cumcount().astype("int64")
    rows = (
        (int(ts), datetime.fromtimestamp(ts / 1000, UTC), int(v), str(e), int(i), None if pd.isna(t) else int(t),
         now, TOPIC, int(p), int(o))
        for ts, v, e, i, t, p, o in zip(
            events["timestamp"], events["visitorid"], events["event"], events["itemid"], events["transactionid"],
            partition, offset, strict=True,
        )
    )  # fmt: skip
    next_offset = {p: int((partition == p).sum()) for p in range(PARTITIONS)}
    bad = []
    for j, (raw, reason) in enumerate(BAD_MESSAGES):
        p = j % PARTITIONS
        bad.append(("kafka", TOPIC, p, next_offset[p], raw, reason))
        next_offset[p] += 1
    event_months(conn, events["timestamp"])
    with conn.cursor() as cur:
        _copy(cur, COPY_EVENTS, EVENT_TYPES_SQL, rows)
        _copy(cur, COPY_QUARANTINE, QUARANTINE_TYPES_SQL, bad)
        for p, end in next_offset.items():
            inserted = int((partition == p).sum())
            cur.execute(INSERT_RANGE, (TOPIC, p, end, end, inserted, end - inserted))
    conn.commit()
    return len(bad), Counter(reason.split(":", 1)[0] for *_, reason in bad)


def _windows(conn: psycopg.Connection, events: pd.DataFrame) -> None:
    """windowed_stats and event_statistics as the analytics assets define them: exact counts."""
    frame = events.assign(window=events["timestamp"] // WINDOW_MS * WINDOW_MS)
    grouped = frame.groupby(["window", "event"]).agg(
        n=("timestamp", "size"), users=("visitorid", "nunique"), items=("itemid", "nunique")
    )
    windows = (
        (datetime.fromtimestamp(w / 1000, UTC), datetime.fromtimestamp((w + WINDOW_MS) / 1000, UTC), str(e), int(n),
         int(u), int(i))
        for (w, e), n, u, i in zip(grouped.index, grouped["n"], grouped["users"], grouped["items"], strict=True)
    )  # fmt: skip
    totals = events.groupby("event").agg(
        n=("timestamp", "size"),
        users=("visitorid", "nunique"),
        items=("itemid", "nunique"),
        last=("timestamp", "max"),
    )
    with conn.cursor() as cur:
        _copy(cur, COPY_WINDOWS, WINDOW_TYPES_SQL, windows)
        for event, n, u, i, last in zip(
            totals.index, totals["n"], totals["users"], totals["items"], totals["last"], strict=True
        ):
            last_time = datetime.fromtimestamp(int(last) / 1000, UTC)
            cur.execute(INSERT_EVENT_STATISTICS, (str(event), int(n), int(u), int(i), last_time))
    conn.commit()


def _reference(url: str, raw_dir: Path) -> None:
    postgres = PostgresResource(url=url)
    try:
        config = RawFilesConfig(raw_dir=str(raw_dir))
        category_tree(dg.build_asset_context(), config=config, postgres=postgres)
        item_properties(dg.build_asset_context(), config=config, postgres=postgres)
        items(dg.build_asset_context(), postgres=postgres)
    finally:
        postgres.close()


def _sessions(url: str) -> dict[int, int]:
    """Sessions, the funnels and retention by the real sessions step, over every stored event (COPYed above,
    so queued here as the loading transaction would have); returns the item categories it saw."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(QUEUE_EVERY_VISITOR)
        update_sessions(conn)
        rows = conn.execute("SELECT itemid, categoryid FROM items WHERE categoryid IS NOT NULL").fetchall()
    return {int(i): int(c) for i, c in rows}


def registry_metrics(version: int) -> dict[str, Any]:
    """Metrics shaped as the registry stores them (ml.candidate): validation per type with the gate metric's
    interval, the gate's evidence, test per model, the gate's settings."""
    lift = 0.004 * version
    estimate = {"mean": 0.030 + lift, "low": 0.025 + lift, "high": 0.035 + lift, "visitors": 400 + version}
    return {
        "metric": "ndcg@10",
        "model_type": "lightfm",
        "validation": {
            "lightfm": {
                "precision@10": 0.010 + lift,
                "recall@10": 0.050 + lift,
                "ndcg@10": estimate["mean"],
                "ndcg@10 low": estimate["low"],
                "ndcg@10 high": estimate["high"],
                "visitors": estimate["visitors"],
            },
            "popularity": {"precision@10": 0.012, "recall@10": 0.052, "ndcg@10": 0.031},
        },
        "evidence": {
            "candidate": {"label": "lightfm", "estimate": estimate},
            "incumbent": {
                "label": "popularity (nothing promoted yet)",
                "version": None,
                "estimate": {"mean": 0.031, "low": 0.027, "high": 0.035, "visitors": 400 + version},
                "same_as_candidate": False,
            },
        },
        "test": {
            "lightfm": {
                "precision@10": 0.011 + lift,
                "recall@10": 0.055 + lift,
                "ndcg@10": 0.032 + lift,
                "auc": 0.80 + lift,
            },
            "popularity": {"precision@10": 0.015, "recall@10": 0.060, "ndcg@10": 0.035, "auc": 0.78},
        },
        "gate": {"metric": "ndcg", "min_visitors": 200, "confidence": 0.95, "resamples": 2000, "seed": 0},
    }


def _models(conn: psycopg.Connection, events: pd.DataFrame) -> tuple[list[int], list[int]]:
    statuses = {1: ("rejected", "ndcg@10 0.036 below popularity 0.035 + margin"), 2: ("retired", "replaced by v3"),
                3: ("promoted", "ndcg@10 0.044 beats popularity 0.035")}  # fmt: skip
    for version in range(1, MODEL_VERSIONS + 1):
        status, reason = statuses[version]
        artefact = f"model v{version}".encode()
        conn.execute(
            INSERT_REGISTRY,
            {
                "params": json.dumps({"no_components": 32, "loss": "warp", "epochs": 10 + version}),
                "window": json.dumps({"train_events": len(events)}),
                "cleaning": json.dumps({"bots": 0}),
                "metrics": json.dumps(registry_metrics(version)),
                "libs": json.dumps({"lightfm": "1.17"}),
                "artefact": artefact,
                "sha": hashlib.sha256(artefact).hexdigest(),
                "status": status,
                "reason": reason,
                "age": 10 * (MODEL_VERSIONS - version + 1),
            },
        )
    by_visitors = events.groupby("itemid")["visitorid"].nunique().sort_values(ascending=False, kind="stable")
    popular = [int(i) for i in by_visitors.index[:20]]
    for rank, item in enumerate(popular, start=1):
        conn.execute(
            INSERT_POPULAR,
            (rank, item, float(by_visitors[item]), int(by_visitors[item]), 3, 2, PROMOTED_VERSION),
        )
    active = events["visitorid"].value_counts(sort=True).index[:RECOMMENDED_VISITORS]
    visitors = sorted(int(v) for v in active)
    for visitor in visitors:
        seen = set(events.loc[events["visitorid"] == visitor, "itemid"])
        candidates = [i for i in by_visitors.index if i not in seen][:RECOMMENDATIONS_EACH]
        for rank, item in enumerate(candidates, start=1):
            conn.execute(INSERT_RECOMMENDATION, (visitor, rank, int(item), 1.0 - rank / 20, PROMOTED_VERSION))
    conn.commit()
    return visitors, popular


def fill(url: str, raw_dir: Path, scale: int = 3000, seed: int = 11) -> Filled:
    generate(raw_dir, scale, seed=seed)
    events = _events(raw_dir)
    with psycopg.connect(url) as conn:
        quarantined, reasons = _ingest(conn, events)
        _windows(conn, events)
        recommended, popular = _models(conn, events)
    _reference(url, raw_dir)
    categories = _sessions(url)
    return Filled(url, events, quarantined, reasons, recommended, popular, categories)


class LagConfig(dg.Config):
    lag: int
    messages: int


@dg.asset(key=dg.AssetKey("raw_events"))
def raw_events_stand_in(config: LagConfig) -> dg.MaterializeResult:
    """Reports the metadata keys of the real raw_events (clickstream_dagster/assets/ingestion.py)."""
    return dg.MaterializeResult(
        metadata={
            "messages_read": config.messages,
            "rows_inserted": config.messages - RAW_EVENTS_QUARANTINED,
            "rows_quarantined": RAW_EVENTS_QUARANTINED,
            "consumer_lag_after_run": config.lag,
            "dagster/row_count": config.messages,
        }
    )


@dg.asset(key=dg.AssetKey("windowed_stats"))
def windowed_stats_stand_in() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"dagster/row_count": WINDOWED_STATS_ROWS})


@dataclass(frozen=True)
class DagsterRuns:
    raw_events: list[str]  # run ids, oldest first (one per lag in LAGS)
    windowed_stats: str


def fill_dagster_storage(dagster_home: Path) -> DagsterRuns:
    """Real runs in the real Dagster instance of `dagster_home` (its dagster.yaml names a PostgreSQL storage)."""
    raw_events: list[str] = []
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        for lag in LAGS:
            config = {"ops": {"raw_events": {"config": {"lag": lag, "messages": RAW_EVENTS_MESSAGES}}}}
            result = dg.materialize([raw_events_stand_in], instance=instance, run_config=config)
            assert result.success
            raw_events.append(result.run_id)
        windowed = dg.materialize([windowed_stats_stand_in], instance=instance)
        assert windowed.success
    return DagsterRuns(raw_events, windowed.run_id)
