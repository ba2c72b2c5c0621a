"""The shopper-analytics assets in real Dagster runs: events produced to a real Kafka topic in several runs,
raw_events and shopper_analytics materialized by Dagster, every table matched row for row against the pandas
recomputation, every check passed; a run whose step finds another applying leaves its events to it."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pandas as pd
import psycopg

from clickstream_dagster.analytics.sessions import queries as sq
from clickstream_dagster.analytics.sessions import session_gap_ms
from clickstream_dagster.assets.ingestion import raw_events
from clickstream_dagster.assets.sessions import CHECKS, SESSIONS, shopper_analytics
from clickstream_dagster.clients.kafka import KafkaClient
from clickstream_dagster.resources import PostgresResource
from tests.analytics import sessions_reference as ref
from tests.assets.conftest import produce, random_events

STORED_EVENTS = 'SELECT "timestamp", visitorid, event, itemid FROM clickstream_events'


def _run(resources: dict[str, Any], instance: dg.DagsterInstance, topic: str, ranges: list[dict[str, int]]):
    result = dg.materialize(
        [raw_events, shopper_analytics],
        resources=resources,
        instance=instance,
        run_config={"ops": {"raw_events": {"config": {"topic": topic, "ranges": ranges}}}},
    )
    assert result.success
    return result


def _matches_pandas(postgres: PostgresResource) -> None:
    with psycopg.connect(postgres.conninfo) as conn:
        events = pd.DataFrame(
            conn.execute(STORED_EVENTS).fetchall(), columns=["timestamp", "visitorid", "event", "itemid"]
        )
        diffs = ref.differences(ref.recompute(events, {}, session_gap_ms()), ref.stored(conn))
    assert not diffs, diffs


def test_runs_keep_sessions_funnel_and_retention_exact(
    kafka: KafkaClient, postgres: PostgresResource, resources: dict[str, Any], instance: dg.DagsterInstance
) -> None:
    # 3,000 events of 200 visitors over three weeks (sessions, returning visitors), in 5 runs.
    events = random_events(3_000, seed=4, span_ms=21 * 86_400_000)
    position: dict[int, int] = {}
    for i in range(0, len(events), 600):
        produce(kafka, events[i : i + 600])
        ends = kafka.end_offsets()
        ranges = [{"partition": p, "start": position.get(p, 0), "end": e} for p, e in ends.items()]
        position.update(ends)
        result = _run(resources, instance, kafka.topic, ranges)
        checks = result.get_asset_check_evaluations()
        assert sorted(c.check_name for c in checks) == sorted(spec.name for spec in CHECKS)
        assert all(c.passed for c in checks), [(c.check_name, c.metadata) for c in checks if not c.passed]
        _matches_pandas(postgres)
    materialized = result.asset_materializations_for_node("shopper_analytics")
    assert {m.asset_key.to_user_string() for m in materialized} == {
        "sessions",
        "session_funnel",
        "item_funnel",
        "retention",
    }
    with postgres.connection() as conn:
        row = conn.execute("SELECT sum(events), count(*) FROM sessions").fetchone()
        weeks = conn.execute("SELECT count(*) FROM retention WHERE weeks_after > 0").fetchone()
    assert row is not None and row[0] == len(events) and row[1] > 200
    assert weeks is not None and weeks[0] > 0


def test_a_run_finding_another_applier_leaves_its_events_to_it(
    kafka: KafkaClient, postgres: PostgresResource, resources: dict[str, Any], instance: dg.DagsterInstance
) -> None:
    events = random_events(500, seed=9)
    produce(kafka, events)
    ranges = [{"partition": p, "start": 0, "end": e} for p, e in kafka.end_offsets().items()]
    with psycopg.connect(postgres.conninfo, autocommit=True) as other:
        assert other.execute(sq.TRY_APPLIER_LOCK).fetchone() == (True,)
        result = _run(resources, instance, kafka.topic, ranges)
        # Nothing materialized nor checked: the holder applies these events.
        assert result.asset_materializations_for_node("shopper_analytics") == []
        assert result.get_asset_check_evaluations() == []
        queued = other.execute("SELECT count(*) FROM session_changes").fetchone()
        assert queued is not None and queued[0] > 0
        other.execute(sq.APPLIER_UNLOCK)
    # The next run (here with nothing new to read) applies what was left.
    result = _run(resources, instance, kafka.topic, ranges)
    assert next(m.asset_key for m in result.asset_materializations_for_node("shopper_analytics")) == SESSIONS
    assert all(c.passed for c in result.get_asset_check_evaluations())
    _matches_pandas(postgres)


def test_the_step_defers_while_ingestion_catches_up_then_applies(
    kafka: KafkaClient, postgres: PostgresResource, resources: dict[str, Any], instance: dg.DagsterInstance
) -> None:
    produce(kafka, random_events(400, seed=3))
    ranges = [{"partition": p, "start": 0, "end": e} for p, e in kafka.end_offsets().items()]

    def run(max_defer_seconds: float) -> dg.ExecuteInProcessResult:
        # Any lag above -1 counts as catching up here (the run leaves 0 messages to read).
        config = {"defer_while_lag_above": -1, "max_defer_seconds": max_defer_seconds}
        result = dg.materialize(
            [raw_events, shopper_analytics],
            resources=resources,
            instance=instance,
            run_config={
                "ops": {
                    "raw_events": {"config": {"topic": kafka.topic, "ranges": ranges}},
                    "shopper_analytics": {"config": config},
                }
            },
        )
        assert result.success
        return result

    deferred = run(max_defer_seconds=3600)
    assert deferred.asset_materializations_for_node("shopper_analytics") == []
    with psycopg.connect(postgres.conninfo) as conn:
        waiting = conn.execute(
            "SELECT count(*), (SELECT count(*) FROM sessions) FROM session_changes"
        ).fetchone()
    assert waiting is not None and waiting[0] > 0 and waiting[1] == 0
    applied = run(max_defer_seconds=0)  # the oldest span has waited longer than that: applied now
    assert len(applied.asset_materializations_for_node("shopper_analytics")) == 4
    assert all(c.passed for c in applied.get_asset_check_evaluations())
    _matches_pandas(postgres)
