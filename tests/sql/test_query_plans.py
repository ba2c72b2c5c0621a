"""A run's checks and live-table refresh read only the run's own rows (primary-key range scans), so their cost
follows the run, not the table: a full scan of clickstream_events per run grows with every event ever stored."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import psycopg

from clickstream_dagster.messages import MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS
from clickstream_dagster.sql import queries as q

ROWS = 200_000
RUN_ID = "run-under-test"
RANGES = [("t", 0, 50_000, 50_100), ("t", 1, 60_000, 60_100), ("t", 2, 10, 110)]


def _populate(conn: psycopg.Connection) -> None:
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


def _scans(conn: psycopg.Connection, query: str, params: dict[str, object]) -> list[tuple[str, str]]:
    row = conn.execute("EXPLAIN (FORMAT JSON) " + query, params).fetchone()
    assert row is not None
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
    found: list[tuple[str, str]] = []

    def walk(node: dict[str, object]) -> None:
        if node.get("Relation Name") == "clickstream_events":
            found.append((str(node["Node Type"]), str(node.get("Index Name", ""))))
        for child in node.get("Plans", []):  # type: ignore[attr-defined]
            walk(child)

    walk(plan[0]["Plan"])
    return found


def test_checks_and_live_refresh_read_the_run_by_primary_key_ranges(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        _populate(conn)
        ranges = conn.execute(q.RANGES_OF_RUN, (RUN_ID,)).fetchall()
        topics, partitions, starts, ends = (list(col) for col in zip(*ranges, strict=True))
        checked: dict[str, object] = {
            "topics": topics,
            "partitions": partitions,
            "starts": starts,
            "ends": ends,
        }
        rules: dict[str, object] = {**checked, "min_ts": MIN_TIMESTAMP_MS, "max_ts": MAX_TIMESTAMP_MS}
        live: dict[str, object] = {"run_id": RUN_ID, "horizon": 10**9, "max_rows": 50_000}

        for query, params in (
            (q.CHECK_ROW_RULES, rules),
            (q.CHECK_DUPLICATE_COORDINATES, checked),
            (q.REFRESH_LIVE_EVENTS_FROM_RUN, live),
        ):
            scans = _scans(conn, query, params)
            assert scans, query
            assert all(node in ("Index Scan", "Index Only Scan") for node, _ in scans), (query, scans)
            assert {index for _, index in scans} == {"clickstream_events_source_uq"}, (query, scans)

        # ... and they see exactly the run's rows.
        assert conn.execute(q.CHECK_ROW_RULES, rules).fetchone() == (0, 0, 0, 0)
        added = conn.execute(q.REFRESH_LIVE_EVENTS_FROM_RUN, live).rowcount
        assert added == sum(end - start for *_, start, end in RANGES)
