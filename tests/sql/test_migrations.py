from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from clickstream_dagster.sql.migrate import apply_migrations, load_migrations

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
        conn.execute(insert)
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(insert)
