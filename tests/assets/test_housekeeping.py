"""The housekeeping job on a real PostgreSQL and a real Dagster instance: what each op deletes and what it keeps;
and the Kafka sensor on a real broker planning exactly the same ranges after the runs behind its cursor were
deleted."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
from dagster._core.test_utils import create_run_for_test

from clickstream_dagster.assets.housekeeping import housekeeping
from clickstream_dagster.assets.ingestion import RANGES_TAG
from clickstream_dagster.clients.kafka import KafkaClient
from clickstream_dagster.ingestion.ledger import record_range
from clickstream_dagster.ingestion.loader import LoadResult
from clickstream_dagster.ingestion.ranges import from_tag
from clickstream_dagster.ingestion.reader import RangeRead
from clickstream_dagster.resources import PostgresResource
from clickstream_dagster.resources.kafka import KafkaResource
from clickstream_dagster.sensors.kafka import build_kafka_sensor
from tests.assets.conftest import produce, random_events

QUARANTINE = """
INSERT INTO quarantine (source, kafka_topic, kafka_partition, kafka_offset, raw_payload, reason, replayed_at)
VALUES ('kafka', 'hk', 0, %s, 'x', 'negative id: -1', now() - make_interval(days => %s))
"""
MODEL = """
INSERT INTO model_registry (model_type, params, data_window, cleaning, metrics, library_versions, artefact,
                            artefact_sha256, artefact_path, status, trained_at)
VALUES ('lightfm', '{}', '{}', '{}', '{}', '{}', 'bytes', 'sha', %s, %s, now() - make_interval(days => %s))
RETURNING version
"""


def _finished(
    instance: dg.DagsterInstance, job: str, status: dg.DagsterRunStatus, tags: dict[str, str] | None = None
) -> str:
    """A run that logged an event and then ended with `status` (as the run worker reports them)."""
    run = create_run_for_test(instance, job_name=job, tags=tags, status=dg.DagsterRunStatus.STARTED)
    instance.report_engine_event("a step ran", run)
    if status == dg.DagsterRunStatus.FAILURE:
        instance.report_run_failed(run)
    else:
        instance.report_dagster_event(
            dg.DagsterEvent(event_type_value="PIPELINE_SUCCESS", job_name=job, message="done"), run.run_id
        )
    assert instance.get_run_by_id(run.run_id).status == status  # type: ignore[union-attr]
    return run.run_id


def test_housekeeping_deletes_what_its_settings_say_and_keeps_the_rest(
    postgres: PostgresResource, tmp_path: Path
) -> None:
    with dg.instance_for_test() as instance:
        old_runs = [
            _finished(instance, "ingest_events", dg.DagsterRunStatus.SUCCESS),
            _finished(instance, "ingest_events", dg.DagsterRunStatus.FAILURE),
            _finished(instance, "replay_quarantine", dg.DagsterRunStatus.SUCCESS),
        ]
        running = create_run_for_test(instance, job_name="ingest_events", status=dg.DagsterRunStatus.STARTED)
        training = _finished(instance, "train_recommender", dg.DagsterRunStatus.SUCCESS)
        assert all(instance.all_logs(run_id) for run_id in old_runs)

        files = {name: tmp_path / f"{name}.pkl" for name in ("promoted", "retired_old", "retired_new")}
        for path in files.values():
            path.write_bytes(b"model")
        with psycopg.connect(postgres.conninfo) as conn:
            for offset, days in enumerate((40, 40, 2)):
                conn.execute(QUARANTINE, (offset, days))
            conn.execute(
                "INSERT INTO quarantine (source, kafka_topic, kafka_partition, kafka_offset, reason) "
                "VALUES ('kafka', 'hk', 0, 9, 'not JSON: x')"
            )
            versions = {
                name: conn.execute(MODEL, (str(files[name]), status, days)).fetchone()[0]  # type: ignore[index]
                for name, status, days in (
                    ("promoted", "promoted", 90),
                    ("retired_old", "retired", 45),
                    ("retired_new", "retired", 3),
                )
            }

        # Every setting at its default but the runs' age (0 days: every finished run is old enough here).
        result = housekeeping.execute_in_process(
            instance=instance,
            resources={"postgres": postgres},
            run_config={"ops": {"prune_run_history": {"config": {"runs_days": 0, "batch": 2}}}},
        )
        assert result.success
        assert result.output_for_node("prune_run_history") == 3
        assert all(instance.get_run_by_id(run_id) is None for run_id in old_runs)
        assert all(instance.all_logs(run_id) == [] for run_id in old_runs), "event logs go with their runs"
        assert instance.get_run_by_id(running.run_id) is not None, "a run in flight stays"
        assert instance.get_run_by_id(training) is not None, "only ingestion runs are deleted"
        assert instance.get_run_by_id(result.run_id) is not None

        assert result.output_for_node("prune_quarantine") == 2
        # Event retention unset (the default): every month stays; no events, no window to close.
        assert result.output_for_node("drop_expired_events") == 0
        assert result.output_for_node("close_old_windows") == 0
        assert result.output_for_node("prune_model_artefacts") == 1
        with psycopg.connect(postgres.conninfo) as conn:
            kept = conn.execute(
                "SELECT kafka_offset FROM quarantine WHERE kafka_topic = 'hk' ORDER BY 1"
            ).fetchall()
            models: dict[int, int] = dict(
                conn.execute("SELECT version, octet_length(artefact) FROM model_registry").fetchall()
            )
        assert kept == [(2,), (9,)], "replayed 2 days ago, and never replayed, stay"
        assert models == {versions["promoted"]: 5, versions["retired_old"]: 0, versions["retired_new"]: 5}
        assert [p.name for p in files.values() if p.exists()] == ["promoted.pkl", "retired_new.pkl"]

        again = housekeeping.execute_in_process(instance=instance, resources={"postgres": postgres})
        assert again.success and again.output_for_node("prune_model_artefacts") == 0


def _tick(
    sensor: dg.SensorDefinition,
    instance: dg.DagsterInstance,
    kafka: KafkaClient,
    cursor: str | None,
    postgres: PostgresResource,
) -> Any:
    with dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"kafka": KafkaResource.for_client(kafka), "postgres": postgres},
    ) as context:
        return sensor(context)


def test_the_sensor_plans_the_same_after_its_runs_are_deleted(
    kafka: KafkaClient, postgres: PostgresResource
) -> None:
    """Runs deleted by housekeeping are never requested again, and the next ranges start where the deleted
    ones ended: the cursor, not the run history, says what was planned."""
    sensor = build_kafka_sensor(max_events_per_run=1_000, max_runs_per_tick=10, max_active_runs=10)
    produce(kafka, random_events(2_000, seed=41))
    with dg.instance_for_test() as instance:
        first = _tick(sensor, instance, kafka, None, postgres)
        assert isinstance(first, dg.SensorResult) and first.run_requests
        for request in first.run_requests:
            run_id = _finished(instance, "ingest_events", dg.DagsterRunStatus.SUCCESS, dict(request.tags))
            with psycopg.connect(postgres.conninfo) as conn:  # what the run loaded, in the ledger
                for r in from_tag(request.tags[RANGES_TAG]):
                    loaded = LoadResult(inserted_by_partition=Counter({r.partition: r.size}))
                    record_range(
                        conn,
                        kafka.topic,
                        RangeRead(r, read=r.size, next_offset=r.end, done=True),
                        loaded,
                        run_id,
                    )
        deleted = housekeeping.execute_in_process(
            instance=instance,
            resources={"postgres": postgres},
            run_config={"ops": {"prune_run_history": {"config": {"runs_days": 0}}}},
            op_selection=["prune_run_history"],
        )
        assert deleted.output_for_node("prune_run_history") == len(first.run_requests)
        assert instance.get_runs_count(dg.RunsFilter(job_name="ingest_events")) == 0

        idle = _tick(sensor, instance, kafka, first.cursor, postgres)
        assert isinstance(idle, dg.SkipReason) and "no new messages" in (idle.skip_message or "")
        planned_to = json.loads(first.cursor or "{}")
        produce(kafka, random_events(500, seed=42))
        ends = kafka.end_offsets()
        more = _tick(sensor, instance, kafka, first.cursor, postgres)
        assert isinstance(more, dg.SensorResult)
        ranges = [
            r
            for req in more.run_requests or []
            for r in req.run_config["ops"]["raw_events"]["config"]["ranges"]
        ]
        assert sorted((r["partition"], r["start"], r["end"]) for r in ranges) == sorted(
            (p, planned_to[str(p)], e) for p, e in ends.items() if e > planned_to[str(p)]
        )
