from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from clickstream_dagster.sql import migrate
from clickstream_dagster.sql.migrate import apply_migrations, load_migrations
from tests.helpers import event_months

EXPECTED_TABLES = {
    "clickstream_events",
    "live_clickstream_events",
    "windowed_stats",
    "event_statistics",
    "category_tree",
    "item_properties",
    "items",
    "quarantine",
    "ingested_ranges",
}


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {r[0] for r in rows}


def test_migrations_apply_once_then_are_no_ops(database_factory: Callable[..., str]) -> None:
    url = database_factory(migrate=False)
    first = apply_migrations(url)
    assert [m.version for m in first] == [m.version for m in load_migrations()]
    assert _tables(url) >= EXPECTED_TABLES
    assert apply_migrations(url) == []
    with psycopg.connect(url) as conn:
        count = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
    assert count is not None and count[0] == len(first)


def test_edited_migration_is_refused(database_factory: Callable[..., str]) -> None:
    url = database_factory()
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'tampered' WHERE version = 1")
    with pytest.raises(RuntimeError, match="changed after it was applied"):
        apply_migrations(url)


def test_source_coordinates_are_unique(pg_url: str) -> None:
    insert = """INSERT INTO clickstream_events ("timestamp", event_time, visitorid, event, itemid,
                    kafka_topic, kafka_partition, kafka_offset)
                VALUES (1433221332117, to_timestamp(1433221332.117), 1, 'view', 2, 't', 0, 7)"""
    with psycopg.connect(pg_url) as conn:
        event_months(conn, [1433221332117])
        conn.execute(insert)
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(insert)


def test_0017_moves_the_rows_into_months(
    database_factory: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database loaded before 0017: every row (its id too) is in its month of event time afterwards, the
    months are the partitions of clickstream_events, and new rows take ids after the old ones."""
    url = database_factory(migrate=False)
    every = load_migrations()
    monkeypatch.setattr(migrate, "load_migrations", lambda: [m for m in every if m.version < 17])
    apply_migrations(url)
    columns = (
        'id, "timestamp", event_time, visitorid, event, itemid, kafka_topic, kafka_partition, kafka_offset'
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO clickstream_events ("timestamp", event_time, visitorid, event, itemid,
                   kafka_topic, kafka_partition, kafka_offset)
               SELECT ts, to_timestamp(ts / 1000.0), n % 7, 'view', n % 5, 't', n % 2, n
               FROM (SELECT n, 1430000000000 + n * 86400000::bigint AS ts FROM generate_series(1, 100) n) s"""
        )
        before = conn.execute(f"SELECT {columns} FROM clickstream_events ORDER BY id").fetchall()
    monkeypatch.setattr(migrate, "load_migrations", lambda: every)
    assert [m.version for m in apply_migrations(url)] == [m.version for m in every if m.version >= 17]
    with psycopg.connect(url) as conn:
        after = conn.execute(f"SELECT {columns} FROM clickstream_events ORDER BY id").fetchall()
        months_held = conn.execute(
            """SELECT c.relname, count(e.*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               LEFT JOIN clickstream_events e ON e.tableoid = c.oid
               WHERE i.inhparent = 'clickstream_events'::regclass GROUP BY 1 ORDER BY 1"""
        ).fetchall()
        expected = conn.execute(
            """SELECT 'clickstream_events_' || to_char(event_time AT TIME ZONE 'UTC', 'YYYY_MM'), count(*)
               FROM clickstream_events GROUP BY 1 ORDER BY 1"""
        ).fetchall()
        event_months(conn, [1430000000000])
        new_id = conn.execute(
            """INSERT INTO clickstream_events ("timestamp", event_time, visitorid, event, itemid,
                   kafka_topic, kafka_partition, kafka_offset)
               VALUES (1430000000000, to_timestamp(1430000000), 1, 'view', 1, 't', 0, 1000) RETURNING id"""
        ).fetchone()
        with pytest.raises(psycopg.errors.UniqueViolation):  # the key holds in a month other rows moved into
            conn.execute(
                """INSERT INTO clickstream_events ("timestamp", event_time, visitorid, event, itemid,
                       kafka_topic, kafka_partition, kafka_offset)
                   SELECT "timestamp", event_time, visitorid, event, itemid, kafka_topic, kafka_partition,
                          kafka_offset FROM clickstream_events WHERE kafka_offset = 50"""
            )
    assert after == before and len(after) == 100
    assert months_held == expected and len(expected) == 5  # April to August 2015
    assert new_id == (max(r[0] for r in before) + 1,)


def test_0005_carries_pending_window_changes_over_exactly(
    database_factory: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database left by 0004 with per-event change rows still queued: 0005 turns them into per-window deltas
    with the numbers Spark would have computed from them, and fills window_start for the stored rows."""
    url = database_factory(migrate=False)
    every = load_migrations()
    monkeypatch.setattr(migrate, "load_migrations", lambda: [m for m in every if m.version < 5])
    apply_migrations(url)
    # Up to 0006: 0007 drops window_start again (the window sets replace the window index).
    monkeypatch.setattr(migrate, "load_migrations", lambda: [m for m in every if m.version < 7])
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO clickstream_events ("timestamp", event_time, visitorid, event, itemid,
                   kafka_topic, kafka_partition, kafka_offset)
               SELECT ts, to_timestamp(ts / 1000.0), v, 'view', i, 't', 0, n
               FROM (SELECT n, 1433000000000 + (n % 4) * 100000 AS ts, n % 5 AS v, n % 3 AS i
                     FROM generate_series(1, 60) n) s"""
        )
        # Queued as 0004's loader did: one row per event, the ids only where the pair was new to the window.
        conn.execute("INSERT INTO window_change_batches (events) VALUES (60)")
        conn.execute(
            """INSERT INTO window_changes (batch_id, window_start, event, visitorid, itemid)
               SELECT 1, to_timestamp(floor("timestamp" / 300000.0) * 300), event,
                      CASE WHEN kafka_offset <= 30 THEN visitorid END, itemid
               FROM clickstream_events"""
        )
        expected = conn.execute(
            """SELECT window_start, event, count(*), count(DISTINCT visitorid), count(DISTINCT itemid)
               FROM window_changes GROUP BY 1, 2 ORDER BY 1, 2"""
        ).fetchall()
    applied = apply_migrations(url)
    assert [m.version for m in applied] == [m.version for m in every if 5 <= m.version < 7]
    with psycopg.connect(url) as conn:
        deltas = conn.execute(
            "SELECT window_start, event, events, new_users, new_items FROM window_deltas ORDER BY 1, 2"
        ).fetchall()
        stale = conn.execute(
            """SELECT count(*) FROM clickstream_events
               WHERE window_start <> to_timestamp(floor("timestamp" / 300000.0) * 300)"""
        ).fetchone()
    assert deltas == expected
    assert len(expected) == 2 and sum(r[2] for r in expected) == 60
    assert stale == (0,)
    assert "window_changes" not in _tables(url)


def test_0008_keeps_the_latest_event_time_of_stored_rows(
    database_factory: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database loaded before 0008: the latest event of each type, which the dropped event_time index
    used to give, is in event_totals and event_statistics afterwards."""
    url = database_factory(migrate=False)
    every = load_migrations()
    monkeypatch.setattr(migrate, "load_migrations", lambda: [m for m in every if m.version < 8])
    apply_migrations(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO clickstream_events ("timestamp", event_time, visitorid, event, itemid,
                   kafka_topic, kafka_partition, kafka_offset)
               SELECT ts, to_timestamp(ts / 1000.0), n, CASE WHEN n % 3 = 0 THEN 'addtocart' ELSE 'view' END, n,
                      't', 0, n
               FROM (SELECT n, 1433000000000 + n * 7919 AS ts FROM generate_series(1, 40) n) s"""
        )
        for table in ("event_totals", "event_statistics"):
            conn.execute(
                f"""INSERT INTO {table} (event, event_count, unique_users, unique_items)
                    SELECT event, count(*), count(DISTINCT visitorid), count(DISTINCT itemid)
                    FROM clickstream_events GROUP BY event"""
            )
    monkeypatch.setattr(migrate, "load_migrations", lambda: every)
    assert [m.version for m in apply_migrations(url)] == [m.version for m in every if m.version >= 8]
    with psycopg.connect(url) as conn:
        totals = conn.execute("SELECT event, last_timestamp FROM event_totals ORDER BY event").fetchall()
        shown = conn.execute("SELECT event, last_event_time FROM event_statistics ORDER BY event").fetchall()
        expected = conn.execute(
            """SELECT event, max("timestamp"), to_timestamp(max("timestamp") / 1000.0)
               FROM clickstream_events GROUP BY event ORDER BY event"""
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'clickstream_events'"
        ).fetchall()
    assert totals == [(e, ts) for e, ts, _ in expected]
    assert shown == [(e, t) for e, _, t in expected]
    assert [e for e, *_ in expected] == ["addtocart", "view"]
    assert ("clickstream_events_event_time_idx",) not in indexes
