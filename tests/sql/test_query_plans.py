"""A run's checks and live-table refresh read only the run's own rows (primary-key range scans), so their cost
follows the run, not the table: a full scan of clickstream_events per run grows with every event ever stored."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import psycopg
import psycopg.rows
from psycopg import sql

from clickstream_dagster.events import MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS
from clickstream_dagster.sql import dashboard
from clickstream_dagster.sql import queries as q
from clickstream_dagster.sql.row_rules import CHECK_RUN_RANGES, ROW_RULES
from tests.helpers import event_months

ROWS = 200_000
RUN_ID = "run-under-test"
RANGES = [("t", 0, 50_000, 50_100), ("t", 1, 60_000, 60_100), ("t", 2, 10, 110)]


def _populate(conn: psycopg.Connection) -> None:
    event_months(conn, [1_433_221_332_117, 1_433_221_332_117 + ROWS * 1000])
    with conn.cursor() as cur:
        with cur.copy(
            'COPY clickstream_events ("timestamp", event_time, visitorid, event, itemid, '
            "kafka_topic, kafka_partition, kafka_offset) FROM STDIN"
        ) as copy:
            for i in range(ROWS):
                ts = 1_433_221_332_117 + i * 1000
                event_time = datetime.fromtimestamp(ts / 1000, UTC)
                copy.write_row((ts, event_time, i % 5000, "view", i % 700, "t", i % 3, i // 3))
        for topic, partition, start, end in RANGES:
            cur.execute(
                "INSERT INTO ingested_ranges VALUES (%s, %s, %s, %s, %s, %s, 0, %s)",
                (topic, partition, start, end, end - start, end - start, RUN_ID),
            )
        cur.execute("ANALYZE clickstream_events")
        cur.execute("ANALYZE ingested_ranges")
    conn.commit()


def _plan_nodes(
    conn: psycopg.Connection, query: str | sql.Composable, params: dict[str, object]
) -> list[dict[str, object]]:
    composed = query if isinstance(query, sql.Composable) else sql.SQL(query)
    row = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + composed, params).fetchone()
    assert row is not None
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
    nodes: list[dict[str, object]] = []

    def walk(node: dict[str, object]) -> None:
        nodes.append(node)
        for child in node.get("Plans", []):  # type: ignore[attr-defined]
            walk(child)

    walk(plan[0]["Plan"])
    return nodes


def _month_indexes(conn: psycopg.Connection, index: str) -> set[str]:
    """The months' copies of an index of clickstream_events (of clickstream_events itself: the months)."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
        (index,),
    )
    return {name for (name,) in rows}


def test_checks_and_live_refresh_read_the_run_by_primary_key_ranges(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        _populate(conn)
        checks: dict[str, object] = {"run_id": RUN_ID, "min_ts": MIN_TIMESTAMP_MS, "max_ts": MAX_TIMESTAMP_MS}
        live: dict[str, object] = {"run_id": RUN_ID, "horizon": 10**9, "max_rows": 50_000}

        for query, params in ((CHECK_RUN_RANGES, checks), (q.REFRESH_LIVE_EVENTS_FROM_RUN, live)):
            nodes = _plan_nodes(conn, query, params)
            scans = [
                (str(n["Node Type"]), str(n.get("Index Name", "")))
                for n in nodes
                if n.get("Relation Name") in _month_indexes(conn, "clickstream_events")
            ]
            assert scans, query
            assert all(node in ("Index Scan", "Index Only Scan") for node, _ in scans), (query, scans)
            assert {index for _, index in scans} <= _month_indexes(conn, "clickstream_events_source_uq"), (
                scans
            )
        # The checks' one pass reads each range in offset order from the key: no sort of the run's rows.
        assert "Sort" not in {n["Node Type"] for n in _plan_nodes(conn, CHECK_RUN_RANGES, checks)}

        # ... and they see exactly the run's rows.
        per_range = (
            conn.cursor(row_factory=psycopg.rows.dict_row).execute(CHECK_RUN_RANGES, checks).fetchall()
        )
        counted = ("stored", "quarantined", "replayed")
        assert [
            (r["topic"], r["partition"], r["start"], r["end"], *(r[c] for c in counted), r["violations"])
            for r in per_range
        ] == [
            (topic, partition, start, end, end - start, 0, 0, [0] * len(ROW_RULES))
            for topic, partition, start, end in sorted(RANGES)
        ]
        added = conn.execute(q.REFRESH_LIVE_EVENTS_FROM_RUN, live).rowcount
        assert added == sum(end - start for *_, start, end in RANGES)


def test_dashboard_rankings_read_indexes_not_the_history(pg_url: str) -> None:
    """The dashboard's item rankings walk an index of item_funnel_totals and stop at their limit; its last-day
    top items read the day through the block-range index on "timestamp", not every stored event."""
    with psycopg.connect(pg_url) as conn:
        _populate(conn)
        conn.execute(
            "INSERT INTO item_funnel_totals SELECT i, i % 97 + 1, i % 13, i % 7, i % 11, i % 5, i % 7, i % 97 + 1,"
            " i % 13, i % 7 FROM generate_series(1, 100000) AS i"
        )
        conn.execute("ANALYZE item_funnel_totals")
        rankings = (
            (dashboard.TOP_VIEWED_ITEMS, "item_funnel_totals_viewed_idx"),
            (dashboard.TOP_CONVERTING_ITEMS, "item_funnel_totals_rate_idx"),
        )
        for query, index in rankings:
            nodes = _plan_nodes(conn, query, {"limit": 10, "min_views": 5})
            scans = [n for n in nodes if n.get("Relation Name") == "item_funnel_totals"]
            assert [(n["Node Type"], n.get("Index Name")) for n in scans] == [("Index Scan", index)], query
            assert "Sort" not in {n["Node Type"] for n in nodes}, query
        newest = conn.execute('SELECT max("timestamp") FROM clickstream_events').fetchone()
        assert newest is not None
        nodes = _plan_nodes(conn, dashboard.TOP_ITEMS, {"limit": 10, "since_ms": newest[0] - 3_600_000})
        events = [n for n in nodes if n.get("Relation Name") in _month_indexes(conn, "clickstream_events")]
        assert [n["Node Type"] for n in events] == ["Bitmap Heap Scan"], events
        assert {n.get("Index Name") for n in nodes} & _month_indexes(
            conn, "clickstream_events_timestamp_brin"
        )
        # ... and the rankings answer as the view over every item does.
        viewed = conn.execute(dashboard.TOP_VIEWED_ITEMS, {"limit": 10, "min_views": 5}).fetchall()
        assert [r[0] for r in viewed] == [
            r[0]
            for r in conn.execute(
                "SELECT itemid FROM item_funnel ORDER BY sessions_viewed DESC, itemid LIMIT 10"
            )
        ]
        converting = conn.execute(dashboard.TOP_CONVERTING_ITEMS, {"limit": 10, "min_views": 5}).fetchall()
        assert [r[0] for r in converting] == [
            r[0]
            for r in conn.execute(
                "SELECT itemid FROM item_funnel WHERE sessions_viewed >= 5 "
                "ORDER BY view_to_purchase_rate DESC NULLS LAST, sessions_viewed_bought DESC, itemid LIMIT 10"
            )
        ]
