"""windowed_stats computed incrementally with real pyspark (a local session and a real Spark Connect server)
from a real PostgreSQL, checked against an independent plain-SQL recomputation over all rows."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pyspark.sql import SparkSession

from clickstream_dagster.analytics.windows import (
    WINDOW_MS,
    compute_window_stats,
    ms_to_datetime,
    partition_ranges,
    range_predicate,
    read_partitions,
    read_window_events,
    time_ranges,
    upsert_window_stats,
    windows_touched,
)
from clickstream_dagster.resources.spark import (
    JdbcConnection,
    SparkResource,
    jdbc_from_libpq,
    missing_driver_hint,
)
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


def test_time_ranges_coalesce_adjacent_windows() -> None:
    w = WINDOW_MS
    starts = [BASE_MS + k * w for k in (0, 1, 2, 5, 7, 8)]
    assert time_ranges(starts) == [
        (BASE_MS, BASE_MS + 3 * w),
        (BASE_MS + 5 * w, BASE_MS + 6 * w),
        (BASE_MS + 7 * w, BASE_MS + 9 * w),
    ]
    # Over the cap, the narrowest gap (between 5 and 7) merges first.
    assert time_ranges(starts, max_ranges=2) == [
        (BASE_MS, BASE_MS + 3 * w),
        (BASE_MS + 5 * w, BASE_MS + 9 * w),
    ]
    assert time_ranges(starts, max_ranges=1) == [(BASE_MS, BASE_MS + 9 * w)]
    assert time_ranges([]) == []
    with pytest.raises(ValueError, match="multiple of 300000"):
        time_ranges([BASE_MS + 1])


def test_partition_ranges_split_long_ranges_on_window_edges() -> None:
    w = WINDOW_MS
    groups = partition_ranges([(BASE_MS, BASE_MS + 10 * w)], 4)
    assert len(groups) == 4
    flat = [r for g in groups for r in g]
    assert flat[0][0] == BASE_MS and flat[-1][1] == BASE_MS + 10 * w
    assert all((hi - lo) % w == 0 and lo % w == 0 for lo, hi in flat)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(flat))
    assert partition_ranges([(BASE_MS, BASE_MS + w)], 4) == [[(BASE_MS, BASE_MS + w)]]
    assert partition_ranges([], 4) == []


def test_read_partitions_grow_with_the_span_read() -> None:
    assert [read_partitions(n) for n in (0, 1, 12, 2016, 2017, 5000, 40_000)] == [1, 1, 1, 1, 2, 3, 4]


def test_ms_to_datetime_is_exact() -> None:
    assert ms_to_datetime(1_433_000_000_123) == datetime(2015, 5, 30, 15, 33, 20, 123_000, tzinfo=UTC)
    assert ms_to_datetime(BASE_MS).timestamp() * 1000 == BASE_MS


def test_range_predicate_is_strict_timestamptz_sql() -> None:
    pred = range_predicate([(0, WINDOW_MS), (3 * WINDOW_MS, 4 * WINDOW_MS)])
    assert pred == (
        "(event_time >= '1970-01-01 00:00:00+00:00'::timestamptz"
        " AND event_time < '1970-01-01 00:05:00+00:00'::timestamptz)"
        " OR (event_time >= '1970-01-01 00:15:00+00:00'::timestamptz"
        " AND event_time < '1970-01-01 00:20:00+00:00'::timestamptz)"
    )


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
            "postgresql://u:p%40ss%3Aw@db.example:6432/events?sslmode=require",
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
        resource = SparkResource(master="local[2]", jars=",".join(map(str, jdbc_jars)))
    else:
        resource = SparkResource(remote=request.getfixturevalue("spark_connect_endpoint"))
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


def insert_events(conn: psycopg.Connection, rows: list[tuple[Any, ...]]) -> None:
    with conn.cursor().copy(
        'COPY clickstream_events ("timestamp", event_time, visitorid, event, itemid, transactionid,'
        " kafka_topic, kafka_partition, kafka_offset) FROM STDIN"
    ) as copy:
        for row in rows:
            copy.write_row(row)


def recompute(
    spark: SparkSession, jdbc: JdbcConnection, conn: psycopg.Connection, rows: list[tuple[Any, ...]]
) -> list[int]:
    """What the asset does per run: the windows the new events touch, recomputed and upserted."""
    touched = windows_touched(r[0] for r in rows)
    stats = compute_window_stats(spark, jdbc, touched)
    assert {int(s.window_start.timestamp() * 1000) for s in stats} == set(touched)
    upsert_window_stats(conn, touched, stats)
    return touched


def assert_matches_full_recomputation(conn: psycopg.Connection) -> None:
    expected = conn.execute(EXPECTED_SQL).fetchall()
    actual = conn.execute(ACTUAL_SQL).fetchall()
    assert expected, "the test inserted no events"
    assert actual == expected


# ---- Spark against PostgreSQL -------------------------------------------------------------------------


def test_initial_and_incremental_runs_match_plain_sql(spark: SparkSession, pg_url: str) -> None:
    jdbc = jdbc_from_libpq(pg_url)
    events = EventFactory(seed=7)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        first = events.in_windows(list(range(12)), 3000) + events.on_edges([0, 3, 11, 12])
        insert_events(conn, first)
        assert len(recompute(spark, jdbc, conn, first)) == 13
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
            insert_events(conn, batch)
            before: dict[datetime, datetime] = dict(
                conn.execute("SELECT window_start, max(updated_at) FROM windowed_stats GROUP BY 1").fetchall()
            )
            touched = recompute(spark, jdbc, conn, batch)
            after: dict[datetime, datetime] = dict(
                conn.execute("SELECT window_start, max(updated_at) FROM windowed_stats GROUP BY 1").fetchall()
            )
            untouched = set(before) - {datetime.fromtimestamp(t / 1000, tz=UTC) for t in touched}
            assert {w: after[w] for w in untouched} == {w: before[w] for w in untouched}
        assert_matches_full_recomputation(conn)


def test_event_type_gone_from_a_window_is_deleted(spark: SparkSession, pg_url: str) -> None:
    jdbc = jdbc_from_libpq(pg_url)
    events = EventFactory(seed=3)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = events.in_windows([0, 1, 2], 600)
        insert_events(conn, rows)
        recompute(spark, jdbc, conn, rows)
        window = datetime.fromtimestamp((BASE_MS + WINDOW_MS) / 1000, tz=UTC)
        conn.execute(
            "DELETE FROM clickstream_events WHERE event = 'transaction' AND event_time >= %s AND event_time < %s",
            (window, datetime.fromtimestamp((BASE_MS + 2 * WINDOW_MS) / 1000, tz=UTC)),
        )
        result = upsert_window_stats(
            conn, [BASE_MS + WINDOW_MS], compute_window_stats(spark, jdbc, [BASE_MS + WINDOW_MS])
        )
        assert result.deleted == 1
        assert_matches_full_recomputation(conn)


def test_reads_only_the_rows_of_the_touched_windows(spark: SparkSession, pg_url: str) -> None:
    jdbc = jdbc_from_libpq(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        insert_events(conn, EventFactory(seed=5).in_windows(list(range(10)), 2000))
        wanted = [BASE_MS + k * WINDOW_MS for k in (1, 2, 6, 9)]
        (expected,) = conn.execute(
            'SELECT count(*) FROM clickstream_events WHERE floor("timestamp" / 300000.0) * 300000 = ANY(%s)',
            (wanted,),
        ).fetchone() or (None,)
    df = read_window_events(spark, jdbc, wanted, partitions=3)
    assert df is not None
    assert df.count() == expected
    # Merged across gaps (one range), the same windows: the extra ones read are dropped.
    assert compute_window_stats(spark, jdbc, wanted, max_ranges=1) == compute_window_stats(
        spark, jdbc, wanted
    )
    assert read_window_events(spark, jdbc, []) is None
    assert compute_window_stats(spark, jdbc, []) == []


def test_missing_jdbc_driver_says_what_to_do() -> None:
    exc = RuntimeError("java.lang.ClassNotFoundException: org.postgresql.Driver")
    assert "clickstream up" in (missing_driver_hint(exc, remote=True) or "")
    assert "jars" in (missing_driver_hint(exc, remote=False) or "")
    assert missing_driver_hint(RuntimeError("something else"), remote=False) is None
