"""windowed_stats kept incrementally with real pyspark (a local session and a real Spark Connect server) from
the change queue the real loading code writes to a real PostgreSQL, checked against an independent plain-SQL
recomputation over all rows."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from pyspark.sql import SparkSession

from clickstream_dagster.analytics.windows import WINDOW_MS, ms_to_datetime, windows_touched
from clickstream_dagster.analytics.windows.sets import STORED_ID, merge_window_sets
from clickstream_dagster.analytics.windows.stats import (
    BatchesAlreadyApplied,
    apply_window_deltas,
    batch_predicates,
    compute_window_deltas,
    pending_batches,
    read_window_deltas,
)
from clickstream_dagster.clients.spark import (
    JdbcConnection,
    SparkClient,
    jdbc_from_libpq,
    missing_driver_hint,
)
from clickstream_dagster.events import ParsedEvent
from clickstream_dagster.ingestion.loader import LoadResult, load_batch
from clickstream_dagster.ingestion.reader import Batch
from clickstream_dagster.stack.config import StackConfig
from clickstream_dagster.stack.spark import fetch_jdbc_jars

# An epoch-aligned window start in the RetailRocket era (mid 2015).
BASE_MS = (1_433_000_000_000 // WINDOW_MS) * WINDOW_MS
EVENT_TYPES = ("view", "view", "view", "view", "addtocart", "transaction")

# The reference: every window from all rows, straight from the epoch-ms column, independent of the code.
EXPECTED_SQL = """
SELECT to_timestamp(floor("timestamp" / 300000.0) * 300)       AS window_start,
       to_timestamp(floor("timestamp" / 300000.0) * 300 + 300) AS window_end,
       event, count(*), count(DISTINCT visitorid), count(DISTINCT itemid)
FROM clickstream_events
GROUP BY 1, 2, 3
ORDER BY 1, 3
"""
ACTUAL_SQL = """
SELECT window_start, window_end, event, event_count, unique_users, unique_items
FROM windowed_stats
ORDER BY 1, 3
"""
# Per event type totals, which the loading transaction keeps, against the same independent recount.
EXPECTED_TOTALS_SQL = """
SELECT event, count(*), count(DISTINCT visitorid), count(DISTINCT itemid), max("timestamp") FROM clickstream_events
GROUP BY 1 ORDER BY 1
"""
ACTUAL_TOTALS_SQL = (
    "SELECT event, event_count, unique_users, unique_items, last_timestamp FROM event_totals ORDER BY 1"
)


# ---- pure functions -----------------------------------------------------------------------------------


def test_windows_touched_boundaries() -> None:
    w = WINDOW_MS
    assert windows_touched([]) == []
    assert windows_touched([BASE_MS]) == [BASE_MS]  # exactly on the edge: the window it opens
    assert windows_touched([BASE_MS - 1]) == [BASE_MS - w]  # last ms of the previous window
    assert windows_touched([BASE_MS + w - 1, BASE_MS + w]) == [BASE_MS, BASE_MS + w]
    assert windows_touched([BASE_MS + 7 * w + 5, BASE_MS + 3, BASE_MS + 1, BASE_MS + 7 * w]) == [
        BASE_MS,
        BASE_MS + 7 * w,
    ]
    assert windows_touched([0, 299_999, 300_000]) == [0, 300_000]
    assert windows_touched([-1]) == [-w]  # floor, not truncation


@pytest.mark.parametrize("large", [2**40, 2**57])  # ids as they come / too large for one key: ranked first
def test_merge_of_window_sets_matches_python_sets(large: int) -> None:
    """The numpy merge against plain Python sets: random groups, repeats, empty and full overlaps."""
    rng = random.Random(3)
    for _ in range(50):
        touched = sorted(rng.sample(range(1_000), rng.randrange(1, 12)))
        old = {g: set(rng.sample(range(40), rng.randrange(0, 15))) for g in touched}
        batch = [
            (g, rng.randrange(40) * large) if rng.random() < 0.1 else (g, rng.randrange(40)) for g in touched
        ]
        batch += [(rng.choice(touched), rng.randrange(40)) for _ in range(rng.randrange(0, 60))]
        stored = [np.array(sorted(old[g]), STORED_ID).tobytes() for g in touched]
        merged = merge_window_sets(
            np.array(touched, np.int64),
            np.array([g for g, _ in batch], np.int64),
            np.array([i for _, i in batch], np.int64),
            stored,
        )
        for k, g in enumerate(touched):
            mine = {i for h, i in batch if h == g}
            assert merged.added[k] == len(mine - old[g])
            assert np.frombuffer(merged.sets[k], STORED_ID).tolist() == sorted(old[g] | mine)


def test_batch_predicates_group_whole_batches() -> None:
    assert batch_predicates([], 0) == []
    assert batch_predicates([3], 10) == ["batch_id IN (3)"]
    assert batch_predicates([5, 3, 4], 1_000) == ["batch_id IN (3, 4, 5)"]  # small: one partition
    many = batch_predicates(list(range(1, 11)), 2_000_000)
    assert len(many) == 4
    assert sorted(int(x) for p in many for x in p.removeprefix("batch_id IN (")[:-1].split(", ")) == list(
        range(1, 11)
    )


def test_ms_to_datetime_is_exact() -> None:
    assert ms_to_datetime(1_433_000_000_123) == datetime(2015, 5, 30, 15, 33, 20, 123_000, tzinfo=UTC)
    assert ms_to_datetime(BASE_MS).timestamp() * 1000 == BASE_MS


@pytest.mark.parametrize(
    ("url", "jdbc_url", "user", "password"),
    [
        (
            "postgresql://postgres@127.0.0.1:5433/clickstream",
            "jdbc:postgresql://127.0.0.1:5433/clickstream",
            "postgres",
            None,
        ),
        (
            "postgresql://u:p%40ss%3Aw@db.example:6432/events?sslmode=require",  # pragma: allowlist secret
            "jdbc:postgresql://db.example:6432/events?sslmode=require",
            "u",
            "p@ss:w",
        ),
        ("postgresql+psycopg2://u@[::1]:5432/d", "jdbc:postgresql://[::1]:5432/d", "u", None),
        (
            "postgres://u@h1:5432,h2:5433/d?application_name=x",
            "jdbc:postgresql://h1:5432,h2:5433/d?ApplicationName=x",
            "u",
            None,
        ),
        ("postgresql://me@", "jdbc:postgresql://localhost:5432/me", "me", None),
        ("postgresql://h/d?user=a&password=b", "jdbc:postgresql://h/d", "a", "b"),
    ],
)
def test_jdbc_from_libpq(url: str, jdbc_url: str, user: str | None, password: str | None) -> None:
    conn = jdbc_from_libpq(url)
    assert (conn.url, conn.user, conn.password) == (jdbc_url, user, password)
    assert "password" not in repr(conn) or password is None
    assert conn.properties()["driver"] == "org.postgresql.Driver"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u@h/d", "not a PostgreSQL URL"),
        ("postgresql://u@/d?host=/var/run/postgresql", "host= in"),
        ("postgresql://u@h/d?gssencmode=disable", "no JDBC equivalent"),
    ],
)
def test_jdbc_from_libpq_rejects_what_jdbc_cannot_use(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        jdbc_from_libpq(url)


# ---- Spark sessions -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jdbc_jars(stack_config: StackConfig) -> list[Path]:
    return fetch_jdbc_jars(stack_config)


@pytest.fixture(scope="module", params=["local", "connect"])
def spark(request: pytest.FixtureRequest, jdbc_jars: list[Path]) -> Iterator[SparkSession]:
    # Parametrized at module scope: every local test runs (and its SparkContext stops) before any Connect one.
    if request.param == "local":
        resource = SparkClient(master="local[2]", jars=",".join(map(str, jdbc_jars)))
    else:
        resource = SparkClient(remote=request.getfixturevalue("spark_connect_endpoint"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPARK_REMOTE", "")  # as the stack exports it to Dagster when Spark Connect is not used
        session = resource.session()
    try:
        yield session
    finally:
        resource.stop()


# ---- data ---------------------------------------------------------------------------------------------


class EventFactory:
    """Deterministic clickstream events; a small visitor/item pool makes repeats (distinct counts matter)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.offset = 0

    def event(self, ts_ms: int) -> tuple[Any, ...]:
        self.offset += 1
        event = self.rng.choice(EVENT_TYPES)
        return (
            ts_ms,
            datetime.fromtimestamp(ts_ms / 1000, tz=UTC),
            self.rng.randrange(1, 60),  # visitorid
            event,
            self.rng.randrange(1, 90),  # itemid
            self.rng.randrange(1, 10_000) if event == "transaction" else None,
            "test",
            0,
            self.offset,
        )

    def in_windows(self, window_indexes: list[int], n: int) -> list[tuple[Any, ...]]:
        rows = []
        for _ in range(n):
            start = BASE_MS + self.rng.choice(window_indexes) * WINDOW_MS
            rows.append(self.event(start + self.rng.randrange(WINDOW_MS)))
        return rows

    def on_edges(self, window_indexes: list[int]) -> list[tuple[Any, ...]]:
        """Events exactly on a window's first and last millisecond, and twice the same visitor/item."""
        rows = []
        for k in window_indexes:
            start = BASE_MS + k * WINDOW_MS
            rows += [self.event(start), self.event(start + WINDOW_MS - 1), self.event(start + 1)]
            dup = self.event(start + 10)
            rows += [dup, (*dup[:-1], self._next_offset())]
        return rows

    def _next_offset(self) -> int:
        self.offset += 1
        return self.offset


def as_batch(rows: list[tuple[Any, ...]]) -> Batch:
    batch = Batch("test")
    for ts, _, visitorid, event, itemid, transactionid, _, partition, offset in rows:
        batch.events.append(ParsedEvent(ts, visitorid, event, itemid, transactionid, ts, partition, offset))
    return batch


def load_events(conn: psycopg.Connection, rows: list[tuple[Any, ...]]) -> LoadResult:
    """Through the real loading transaction (which queues the per-window deltas)."""
    with conn.transaction():
        return load_batch(conn, as_batch(rows))


def apply_pending(spark: SparkSession, jdbc: JdbcConnection, conn: psycopg.Connection) -> list[int]:
    """What the asset does per run: the queued batches aggregated by Spark and added; returns the batches."""
    batches = pending_batches(conn)
    deltas = compute_window_deltas(spark, jdbc, batches.ids, batches.events)
    assert sum(d.events for d in deltas) == batches.events
    apply_window_deltas(conn, batches.ids, deltas)
    return batches.ids


def assert_matches_full_recomputation(conn: psycopg.Connection) -> None:
    expected = conn.execute(EXPECTED_SQL).fetchall()
    actual = conn.execute(ACTUAL_SQL).fetchall()
    assert expected, "the test inserted no events"
    assert actual == expected
    assert conn.execute("SELECT count(*) FROM window_deltas").fetchone() == (0,)
    assert conn.execute(ACTUAL_TOTALS_SQL).fetchall() == conn.execute(EXPECTED_TOTALS_SQL).fetchall()


# ---- Spark against PostgreSQL -------------------------------------------------------------------------


def test_initial_and_incremental_runs_match_plain_sql(spark: SparkSession, pg_url: str) -> None:
    jdbc = jdbc_from_libpq(pg_url)
    events = EventFactory(seed=7)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        first = events.in_windows(list(range(12)), 3000) + events.on_edges([0, 3, 11, 12])
        load_events(conn, first[:1500])
        load_events(conn, first[1500:])
        assert len(apply_pending(spark, jdbc, conn)) == 2
        assert_matches_full_recomputation(conn)

        rng = random.Random(11)
        for run in range(12):
            old = rng.sample(range(13), 2)  # late events into existing windows
            new = [13 + run, 40 + 3 * run]  # the next window, and a separate one further out
            batch = events.in_windows(old, rng.randrange(20, 120)) + events.in_windows(
                new, rng.randrange(5, 60)
            )
            if run % 4 == 0:
                batch += events.on_edges([new[0]])
            load_events(conn, batch)
            if run % 3 == 0:
                load_events(conn, batch)  # a re-run of the same offsets: nothing new, nothing counted twice
            before: dict[datetime, datetime] = dict(
                conn.execute("SELECT window_start, max(updated_at) FROM windowed_stats GROUP BY 1").fetchall()
            )
            apply_pending(spark, jdbc, conn)
            after: dict[datetime, datetime] = dict(
                conn.execute("SELECT window_start, max(updated_at) FROM windowed_stats GROUP BY 1").fetchall()
            )
            touched = {ms_to_datetime(t) for t in windows_touched(r[0] for r in batch)}
            untouched = set(before) - touched
            assert {w: after[w] for w in untouched} == {w: before[w] for w in untouched}
            assert_matches_full_recomputation(conn)


def test_reads_only_the_changes_of_the_queued_batches(spark: SparkSession, pg_url: str) -> None:
    jdbc = jdbc_from_libpq(pg_url)
    events = EventFactory(seed=5)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        load_events(conn, events.in_windows(list(range(10)), 2000))
        apply_pending(spark, jdbc, conn)
        load_events(conn, events.in_windows([2, 3], 150))
        load_events(conn, events.in_windows([7], 40))
        batches = pending_batches(conn)
        assert (len(batches.ids), batches.events) == (2, 190)
    df = read_window_deltas(spark, jdbc, batches.ids, batches.events)
    assert df is not None
    rows = df.collect()
    # One delta row per (batch, window, event) the two batches touched, adding up to their 190 events (not the
    # 2,000 applied before).
    assert sum(r["events"] for r in rows) == 190
    assert len(rows) <= 3 * 3
    assert len({r["window_start"] for r in rows}) == 3  # windows 2, 3 and 7
    assert read_window_deltas(spark, jdbc, []) is None
    assert compute_window_deltas(spark, jdbc, []) == []


def test_batches_are_applied_exactly_once(spark: SparkSession, pg_url: str) -> None:
    jdbc = jdbc_from_libpq(pg_url)
    events = EventFactory(seed=9)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        load_events(conn, events.in_windows([0, 1, 2], 500))
        taken = pending_batches(conn)
        deltas = compute_window_deltas(spark, jdbc, taken.ids, taken.events)
        # A batch that commits after the run listed its batches stays queued for the next run.
        late = events.in_windows([1, 4], 80)
        load_events(conn, late)
        apply_window_deltas(conn, taken.ids, deltas)
        assert pending_batches(conn).events == 80
        # Applying the same batches again (a second applier, a retry) is refused and changes nothing.
        snapshot = conn.execute(ACTUAL_SQL).fetchall()
        with pytest.raises(BatchesAlreadyApplied):
            apply_window_deltas(conn, taken.ids, deltas)
        assert conn.execute(ACTUAL_SQL).fetchall() == snapshot
        apply_pending(spark, jdbc, conn)
        assert_matches_full_recomputation(conn)


def test_missing_jdbc_driver_says_what_to_do() -> None:
    exc = RuntimeError("java.lang.ClassNotFoundException: org.postgresql.Driver")
    assert "clickstream up" in (missing_driver_hint(exc, remote=True) or "")
    assert "jars" in (missing_driver_hint(exc, remote=False) or "")
    assert missing_driver_hint(RuntimeError("something else"), remote=False) is None


# ---- the distinct sets behind the deltas (no Spark: the queued deltas are summed in plain SQL) ----------

QUEUED_SQL = """
SELECT window_start, window_start + interval '5 minutes', event, sum(events), sum(new_users), sum(new_items)
FROM window_deltas
GROUP BY 1, 2, 3
ORDER BY 1, 3
"""


def assert_queued_deltas_match_plain_sql(conn: psycopg.Connection) -> None:
    """Nothing applied yet: every queued delta summed per window equals the recount over all rows."""
    expected = conn.execute(EXPECTED_SQL).fetchall()
    assert expected, "the test inserted no events"
    assert conn.execute(QUEUED_SQL).fetchall() == expected
    assert conn.execute(ACTUAL_TOTALS_SQL).fetchall() == conn.execute(EXPECTED_TOTALS_SQL).fetchall()


def test_sets_are_built_for_rows_stored_before_them(pg_url: str) -> None:
    """A database loaded before migration 0007 has totals but no sets: the next batch builds them from the
    stored rows first, then counts only what it adds (late events into stored windows included)."""
    events = EventFactory(seed=13)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        load_events(conn, events.in_windows([0, 1, 2, 3], 800))
        load_events(conn, events.in_windows([3, 4], 200))
        conn.execute("UPDATE event_totals SET visitors = NULL, items = NULL")
        conn.execute("DELETE FROM window_sets WHERE event = 'view'")  # rebuilt whole, whatever is left
        late = events.in_windows([1, 4, 5], 300) + events.on_edges([2, 6])
        load_events(conn, late)
        assert conn.execute("SELECT count(*) FROM event_totals WHERE visitors IS NULL").fetchone() == (0,)
        load_events(conn, events.in_windows([0, 6], 100))
        assert_queued_deltas_match_plain_sql(conn)


def test_concurrent_loads_of_the_same_offsets_count_each_event_once(pg_url: str) -> None:
    """Two runs loading overlapping offsets at once: inserts run outside the ingest lock, so the second waits
    on the first's rows, skips them, and counts only the events it stored itself."""
    events = EventFactory(seed=17)
    load = events.in_windows([0, 1, 2], 600)
    first, second = load[:400], load[200:]  # 200 offsets in both
    with psycopg.connect(pg_url) as a, psycopg.connect(pg_url, autocommit=True) as b:
        result_a = load_batch(a, as_batch(first))  # not committed yet: its rows block the other insert
        with ThreadPoolExecutor(max_workers=1) as pool:
            loading_b = pool.submit(load_events, b, second)
            time.sleep(1.0)
            assert not loading_b.done(), "the second load did not wait for the first one's rows"
            a.commit()
            result_b = loading_b.result(timeout=30)
        assert (result_a.inserted, result_b.inserted) == (400, 200)
        assert a.execute("SELECT count(*) FROM clickstream_events").fetchone() == (600,)
        assert_queued_deltas_match_plain_sql(a)
