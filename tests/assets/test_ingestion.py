"""raw_events and its checks against a real broker and a real Postgres."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any

import dagster as dg
import psycopg
import pytest

from clickstream_dagster.assets.analytics import event_statistics, windowed_stats
from clickstream_dagster.assets.ingestion import live_clickstream_events, raw_events, raw_events_checks
from clickstream_dagster.clients.kafka import KafkaClient
from clickstream_dagster.resources import PostgresResource
from tests.assets.conftest import BAD_MESSAGES, produce, random_events
from tests.assets.test_analytics import _assert_matches_independent_sql
from tests.helpers import event_months


def _materialize_raw(
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    topic: str,
    ranges: list[dict[str, int]],
    raise_on_error: bool = True,
    **cfg: Any,
) -> dg.ExecuteInJobResult:
    return dg.materialize(
        [raw_events, *raw_events_checks],
        resources=resources,
        instance=instance,
        run_config={"ops": {"raw_events": {"config": {"topic": topic, "ranges": ranges, **cfg}}}},
        raise_on_error=raise_on_error,
    )


def _checks_alone(
    resources: dict[str, Any], instance: dg.DagsterInstance
) -> dict[str, dg.AssetCheckEvaluation]:
    """The checks executed on their own (no ranges in their run): they cover the whole table."""
    result = dg.materialize(
        [raw_events, *raw_events_checks],
        resources=resources,
        instance=instance,
        selection=dg.AssetSelection.checks(*raw_events_checks),
        raise_on_error=False,
    )
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def _one(conn: psycopg.Connection, sql: str, params: Any = None) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


@pytest.mark.rehearsal  # also run against the 3-broker, Spark-cluster rehearsal
def test_produced_events_land_exactly_once_and_bad_ones_are_quarantined(
    kafka: KafkaClient,
    postgres: PostgresResource,
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    full_ranges: Callable[[], list[dict[str, int]]],
) -> None:
    events = random_events(3_000)
    produce(kafka, events, BAD_MESSAGES)
    ranges = full_ranges()
    assert sum(r["end"] for r in ranges) == len(events) + len(BAD_MESSAGES)

    result = _materialize_raw(resources, instance, kafka.topic, ranges, batch_size=700)
    assert result.success
    meta = result.asset_materializations_for_node("raw_events")[0].metadata
    assert meta["messages_read"].value == 3_006
    assert meta["rows_inserted"].value == 3_000
    assert meta["rows_quarantined"].value == 6
    assert meta["consumer_lag_after_run"].value == 0
    assert all(c.passed for c in result.get_asset_check_evaluations())

    with postgres.connection() as conn:
        stored = conn.execute(
            'SELECT "timestamp", visitorid, event, itemid, transactionid FROM clickstream_events'
        ).fetchall()
        quarantined = conn.execute(
            "SELECT payload_sha256, reason, kafka_offset FROM quarantine ORDER BY id"
        ).fetchall()
    assert sorted(stored, key=repr) == sorted(events, key=repr)
    assert len(quarantined) == len(BAD_MESSAGES)
    by_payload = {bytes(digest): reason for digest, reason, _ in quarantined}
    for raw, reason in BAD_MESSAGES:
        assert raw is not None and reason in by_payload[hashlib.sha256(raw).digest()]

    # The same ranges again: nothing new, nothing doubled, still reconciles.
    again = _materialize_raw(resources, instance, kafka.topic, ranges)
    meta = again.asset_materializations_for_node("raw_events")[0].metadata
    assert (meta["rows_inserted"].value, meta["rows_quarantined"].value, meta["already_loaded"].value) == (
        0,
        0,
        3006,
    )
    with postgres.connection() as conn:
        assert _one(conn, "SELECT count(*) FROM clickstream_events") == 3_000
        assert _one(conn, "SELECT count(*) FROM quarantine") == 6
    assert all(c.passed for c in again.get_asset_check_evaluations())


def test_overlapping_and_split_ranges_never_duplicate(
    kafka: KafkaClient,
    postgres: PostgresResource,
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    full_ranges: Callable[[], list[dict[str, int]]],
) -> None:
    produce(kafka, random_events(1_200, seed=3))
    full = full_ranges()
    halves = [{**r, "end": r["end"] // 2} for r in full]
    overlapping = [{**r, "start": r["end"] // 3} for r in full]
    for ranges in (halves, overlapping, full):
        assert _materialize_raw(resources, instance, kafka.topic, ranges).success
    with postgres.connection() as conn:
        assert _one(conn, "SELECT count(*) FROM clickstream_events") == 1_200
        assert (
            _one(conn, "SELECT count(DISTINCT (kafka_partition, kafka_offset)) FROM clickstream_events")
            == 1_200
        )


KILLABLE_RUN = textwrap.dedent(
    """
    import sys
    import dagster as dg
    from clickstream_dagster.assets.ingestion import raw_events
    from clickstream_dagster.resources import KafkaResource, PostgresResource

    bootstrap, topic, url, ranges = sys.argv[1], sys.argv[2], sys.argv[3], eval(sys.argv[4])
    dg.materialize(
        [raw_events],
        resources={"kafka": KafkaResource(bootstrap_servers=bootstrap, topic=topic), "postgres": PostgresResource(url=url)},
        run_config={"ops": {"raw_events": {"config": {"topic": topic, "ranges": ranges, "batch_size": 2000}}}},
    )
    """
)


@pytest.mark.rehearsal  # also run against the 3-broker, Spark-cluster rehearsal
def test_run_killed_mid_way_then_retried_loses_and_doubles_nothing(
    kafka: KafkaClient,
    postgres: PostgresResource,
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    full_ranges: Callable[[], list[dict[str, int]]],
) -> None:
    n = 120_000
    produce(kafka, random_events(n, seed=5))
    ranges = full_ranges()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            KILLABLE_RUN,
            kafka.bootstrap_servers,
            kafka.topic,
            postgres.url,
            repr(ranges),
        ],
        env={**os.environ},
    )
    try:
        deadline = time.monotonic() + 120
        landed = 0
        while time.monotonic() < deadline and landed == 0:
            time.sleep(0.05)
            with postgres.connection() as conn:
                landed = _one(conn, "SELECT count(*) FROM clickstream_events")
        proc.kill()  # SIGKILL mid-run: no cleanup, whatever transaction was open is rolled back
    finally:
        proc.wait()
    with postgres.connection() as conn:
        partial = _one(conn, "SELECT count(*) FROM clickstream_events")
    assert 0 < partial < n, f"the kill should land mid-run (rows after kill: {partial})"
    assert partial % 2000 == 0 or partial < n, "only whole batches commit"

    retry = _materialize_raw(resources, instance, kafka.topic, ranges)
    assert retry.success
    meta = retry.asset_materializations_for_node("raw_events")[0].metadata
    assert meta["rows_inserted"].value == n - partial
    with postgres.connection() as conn:
        assert _one(conn, "SELECT count(*) FROM clickstream_events") == n
        assert (
            _one(conn, "SELECT count(DISTINCT (kafka_partition, kafka_offset)) FROM clickstream_events") == n
        )
    assert all(c.passed for c in retry.get_asset_check_evaluations())
    # The windows and totals of the killed run's committed batches and of the retry's are exact.
    windows = dg.materialize(
        [raw_events, windowed_stats, event_statistics],
        resources=resources,
        instance=instance,
        selection=[windowed_stats, event_statistics],
    )
    assert windows.success
    _assert_matches_independent_sql(postgres)


def test_checks_catch_rows_written_around_validation(
    kafka: KafkaClient,
    postgres: PostgresResource,
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    full_ranges: Callable[[], list[dict[str, int]]],
) -> None:
    produce(kafka, random_events(500, seed=9))
    ranges = full_ranges()
    assert _materialize_raw(resources, instance, kafka.topic, ranges).success
    # Someone writes around the pipeline: each row breaks one rule; and one ingested row disappears.
    with postgres.connection() as conn:
        insert = """INSERT INTO clickstream_events ("timestamp", event_time, visitorid, event, itemid, transactionid,
                        kafka_topic, kafka_partition, kafka_offset) VALUES (%s, to_timestamp(%s / 1000.0), %s, %s, %s, %s,
                        'manual', 0, %s)"""
        event_months(conn, [1433000000000, 12])
        conn.execute(insert, (1433000000000, 1433000000000, -1, "view", 5, None, 1))
        conn.execute(insert, (1433000000000, 1433000000000, 1, "click", 5, None, 2))
        conn.execute(insert, (12, 12, 1, "view", 5, None, 3))
        conn.execute(insert, (1433000000000, 1433000000000, 1, "view", 5, 99, 4))
        conn.execute("DELETE FROM clickstream_events WHERE id = (SELECT min(id) FROM clickstream_events)")

    outcomes = _checks_alone(resources, instance)
    assert not outcomes["ids_present_and_non_negative"].passed
    assert not outcomes["event_type_allowed"].passed
    assert not outcomes["timestamps_in_range"].passed
    assert not outcomes["transactionid_only_on_transactions"].passed
    assert not outcomes["offsets_reconcile"].passed
    assert outcomes["no_duplicate_source_coordinates"].passed
    for name in ("ids_present_and_non_negative", "event_type_allowed", "timestamps_in_range"):
        assert outcomes[name].metadata["violations"].value == 1


def test_duplicate_coordinates_are_caught_once_the_unique_key_is_gone(
    kafka: KafkaClient,
    postgres: PostgresResource,
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    full_ranges: Callable[[], list[dict[str, int]]],
) -> None:
    produce(kafka, random_events(300, seed=10))
    ranges = full_ranges()
    assert _materialize_raw(resources, instance, kafka.topic, ranges).success
    with postgres.connection() as conn:  # the key dropped, one stored row written again
        conn.execute("ALTER TABLE clickstream_events DROP CONSTRAINT clickstream_events_source_uq")
        conn.execute(
            """INSERT INTO clickstream_events ("timestamp", event_time, visitorid, event, itemid, transactionid,
                   produced_at, kafka_topic, kafka_partition, kafka_offset)
               SELECT "timestamp", event_time, visitorid, event, itemid, transactionid, produced_at, kafka_topic,
                      kafka_partition, kafka_offset
               FROM clickstream_events WHERE kafka_offset = 7 AND kafka_partition = %s""",
            (ranges[0]["partition"],),
        )

    # The same ranges again (a run's scope: nothing new is inserted) and the checks on their own (the table).
    again = _materialize_raw(resources, instance, kafka.topic, ranges, raise_on_error=False)
    in_run = {e.check_name: e for e in again.get_asset_check_evaluations()}
    for outcomes, scope in (
        (in_run, "this run's ranges"),
        (_checks_alone(resources, instance), "the whole table"),
    ):
        duplicates = outcomes["no_duplicate_source_coordinates"]
        assert not duplicates.passed
        assert duplicates.metadata["violations"].value == 1
        assert duplicates.metadata["scope"].value == scope
        assert not outcomes["offsets_reconcile"].passed  # one range holds a row more than its offsets
        assert outcomes["event_type_allowed"].passed


def test_blocking_check_failure_stops_downstream(
    kafka: KafkaClient,
    postgres: PostgresResource,
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    full_ranges: Callable[[], list[dict[str, int]]],
) -> None:
    produce(kafka, random_events(100, seed=11))
    ranges = full_ranges()
    with postgres.connection() as conn:  # a pre-existing broken row inside the range this run ingests
        event_months(conn, [1433000000000])
        conn.execute(
            """INSERT INTO clickstream_events ("timestamp", event_time, visitorid, event, itemid,
                   kafka_topic, kafka_partition, kafka_offset)
               VALUES (1433000000000, to_timestamp(1433000000), 1, 'click', 1, %s, %s, 0)""",
            (kafka.topic, ranges[0]["partition"]),
        )
    result = dg.materialize(
        [raw_events, *raw_events_checks, live_clickstream_events],
        resources=resources,
        instance=instance,
        run_config={"ops": {"raw_events": {"config": {"topic": kafka.topic, "ranges": ranges}}}},
        raise_on_error=False,
    )
    outcomes = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert outcomes["event_type_allowed"] is False
    assert result.asset_materializations_for_node("live_clickstream_events") == []


def test_live_table_keeps_a_bounded_recent_slice(
    kafka: KafkaClient,
    postgres: PostgresResource,
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    full_ranges: Callable[[], list[dict[str, int]]],
) -> None:
    produce(kafka, random_events(1_000, seed=13))
    live_config = {"config": {"horizon_seconds": 900, "max_rows": 300}}
    result = dg.materialize(
        [raw_events, live_clickstream_events],
        resources=resources,
        instance=instance,
        run_config={
            "ops": {
                "raw_events": {"config": {"topic": kafka.topic, "ranges": full_ranges()}},
                "live_clickstream_events": live_config,
            }
        },
    )
    assert result.success
    with postgres.connection() as conn:
        assert _one(conn, "SELECT count(*) FROM live_clickstream_events") == 300
        # Everything in the live table is a real ingested event, unchanged.
        assert (
            _one(
                conn,
                """SELECT count(*) FROM live_clickstream_events l JOIN clickstream_events e
                   USING (kafka_topic, kafka_partition, kafka_offset)
                   WHERE (l.visitorid, l.itemid, l.event) = (e.visitorid, e.itemid, e.event)""",
            )
            == 300
        )
        # ... and exactly the newest 300: by ingestion time, then offset, over the whole table.
        live = (
            "SELECT kafka_topic, kafka_partition, kafka_offset FROM live_clickstream_events ORDER BY 1, 2, 3"
        )
        newest = """SELECT * FROM (SELECT kafka_topic, kafka_partition, kafka_offset FROM clickstream_events
                    ORDER BY created_at DESC, kafka_offset DESC, kafka_partition DESC LIMIT 300) n
                    ORDER BY 1, 2, 3"""
        assert conn.execute(live).fetchall() == conn.execute(newest).fetchall()
        conn.execute("UPDATE live_clickstream_events SET created_at = now() - interval '1 hour'")
    again = dg.materialize(
        [live_clickstream_events],
        resources=resources,
        instance=instance,
        run_config={"ops": {"live_clickstream_events": {"config": {"horizon_seconds": 60, "max_rows": 300}}}},
    )
    assert again.success
    with postgres.connection() as conn:  # older than the horizon: pruned
        assert (
            _one(
                conn,
                "SELECT count(*) FROM live_clickstream_events WHERE created_at < now() - interval '1 minute'",
            )
            == 0
        )
