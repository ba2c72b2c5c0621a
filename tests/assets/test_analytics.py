"""windowed_stats (pyspark) and event_statistics equal an independent plain-SQL recomputation over all rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dagster as dg

from clickstream_dagster.assets.analytics import event_statistics, windowed_stats
from clickstream_dagster.assets.ingestion import raw_events
from clickstream_dagster.clients.kafka import KafkaClient
from clickstream_dagster.definitions import defs
from clickstream_dagster.resources import PostgresResource
from tests.assets.conftest import produce, random_events

INDEPENDENT_WINDOWS = """
SELECT to_timestamp(floor("timestamp" / 300000.0) * 300) AS window_start,
       to_timestamp(floor("timestamp" / 300000.0) * 300 + 300) AS window_end,
       event, count(*), count(DISTINCT visitorid), count(DISTINCT itemid)
FROM clickstream_events GROUP BY 1, 2, 3 ORDER BY 1, 3
"""
PIPELINE_WINDOWS = """
SELECT window_start, window_end, event, event_count, unique_users, unique_items FROM windowed_stats ORDER BY 1, 3
"""
INDEPENDENT_TOTALS = """
SELECT event, count(*), count(DISTINCT visitorid), count(DISTINCT itemid) FROM clickstream_events
GROUP BY 1 ORDER BY 1
"""
PIPELINE_TOTALS = "SELECT event, event_count, unique_users, unique_items FROM event_statistics ORDER BY 1"


def _run(
    resources: dict[str, Any], instance: dg.DagsterInstance, topic: str, ranges: list[dict[str, int]]
) -> None:
    result = dg.materialize(
        [raw_events, windowed_stats, event_statistics],
        resources=resources,
        instance=instance,
        run_config={"ops": {"raw_events": {"config": {"topic": topic, "ranges": ranges}}}},
    )
    assert result.success


def _assert_matches_independent_sql(postgres: PostgresResource) -> None:
    with postgres.connection() as conn:
        assert conn.execute(PIPELINE_WINDOWS).fetchall() == conn.execute(INDEPENDENT_WINDOWS).fetchall()
        assert conn.execute(PIPELINE_TOTALS).fetchall() == conn.execute(INDEPENDENT_TOTALS).fetchall()
        dirty = conn.execute("SELECT count(*) FROM dirty_windows").fetchone()
    assert dirty == (0,)


def test_stats_equal_sql_after_many_small_runs_touching_the_same_windows(
    kafka: KafkaClient,
    postgres: PostgresResource,
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
) -> None:
    # 4,000 events over 90 minutes (18 windows), some exactly on window edges, arriving in 8 small runs.
    events = random_events(4_000, seed=21, start_ms=1_433_001_600_000, span_ms=90 * 60_000)
    events += [(1_433_001_600_000 + k * 300_000, 7, "view", 7, None) for k in range(18)]
    position: dict[int, int] = {}
    chunk = len(events) // 8 + 1
    for i in range(0, len(events), chunk):
        produce(kafka, events[i : i + chunk])
        ends = kafka.end_offsets()
        ranges = [{"partition": p, "start": position.get(p, 0), "end": e} for p, e in ends.items()]
        position.update(ends)
        _run(resources, instance, kafka.topic, ranges)
        _assert_matches_independent_sql(postgres)

    with postgres.connection() as conn:
        n_windows = conn.execute("SELECT count(DISTINCT window_start) FROM windowed_stats").fetchone()
        total = conn.execute("SELECT sum(event_count) FROM windowed_stats").fetchone()
    assert n_windows == (18,)
    assert total == (len(events),)


def test_rerunning_without_new_events_changes_nothing(
    kafka: KafkaClient,
    postgres: PostgresResource,
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    full_ranges: Callable[[], list[dict[str, int]]],
) -> None:
    produce(kafka, random_events(500, seed=22))
    _run(resources, instance, kafka.topic, full_ranges())
    with postgres.connection() as conn:
        before = conn.execute("SELECT * FROM windowed_stats ORDER BY 1, 3").fetchall()
    _run(resources, instance, kafka.topic, full_ranges())
    with postgres.connection() as conn:
        after = conn.execute("SELECT * FROM windowed_stats ORDER BY 1, 3").fetchall()
    assert after == before  # same rows, same updated_at: nothing was rewritten
    _assert_matches_independent_sql(postgres)


def test_ingest_job_refreshes_windowed_stats_right_after_the_blocking_checks(
    kafka: KafkaClient,
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    full_ranges: Callable[[], list[dict[str, int]]],
) -> None:
    # windowed_stats feeds the live view: among the steps waiting on raw_events' checks it goes first.
    produce(kafka, random_events(200, seed=23))
    job = defs.resolve_job_def("ingest_events")
    result = job.execute_in_process(
        resources=resources,
        instance=instance,
        run_config={"ops": {"raw_events": {"config": {"topic": kafka.topic, "ranges": full_ranges()}}}},
    )
    assert result.success
    started = [
        e.step_key
        for e in instance.all_logs(result.run_id)
        if e.dagster_event and e.dagster_event.event_type_value == "STEP_START"
    ]
    assert started[:3] == ["raw_events", "validate_raw_events", "windowed_stats"]
    assert set(started[3:]) == {"event_statistics", "live_clickstream_events", "shopper_analytics"}
    assert started[-1] == "shopper_analytics"  # sessions, funnels and retention last (op priority -1)
