"""The sessions sweeper on a real PostgreSQL and a real Dagster instance: a queue that no run will apply (here
the run that loaded it left it to an applier that then went away) becomes one run of the sessions step, which
the ingest job runs and which applies it exactly."""

from __future__ import annotations

from typing import Any

import dagster as dg
import psycopg
import pytest
from dagster._core.test_utils import create_run_for_test

from clickstream_dagster import definitions
from clickstream_dagster.analytics.sessions import queries as sq
from clickstream_dagster.assets.ingestion import raw_events
from clickstream_dagster.assets.sessions import ASSET_KEYS, shopper_analytics
from clickstream_dagster.clients.kafka import KafkaClient
from clickstream_dagster.resources import PostgresResource
from clickstream_dagster.sensors.sessions import build_sessions_sensor
from tests.assets.conftest import produce, random_events
from tests.assets.test_sessions_assets import _matches_pandas


def _tick(sensor: dg.SensorDefinition, instance: dg.DagsterInstance, postgres: PostgresResource) -> Any:
    with dg.build_sensor_context(instance=instance, resources={"postgres": postgres}) as context:
        return sensor(context)


def _queued(postgres: PostgresResource) -> int:
    with psycopg.connect(postgres.conninfo) as conn:
        row = conn.execute("SELECT count(*) FROM session_changes").fetchone()
    return int(row[0]) if row else 0


def test_a_stranded_queue_becomes_one_run_of_the_sessions_step(
    kafka: KafkaClient,
    postgres: PostgresResource,
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sensor = build_sessions_sensor(stranded_after_s=0)
    empty = _tick(sensor, instance, postgres)
    assert isinstance(empty, dg.SkipReason) and "nothing queued" in (empty.skip_message or "")

    # A run loads events while another holder has the applier's turn: its step leaves them to the holder,
    # which goes away without applying them (a failed run whose retries ran out).
    produce(kafka, random_events(800, seed=12))
    ranges = [{"partition": p, "start": 0, "end": e} for p, e in kafka.end_offsets().items()]
    with psycopg.connect(postgres.conninfo, autocommit=True) as holder:
        assert holder.execute(sq.TRY_APPLIER_LOCK).fetchone() == (True,)
        loaded = dg.materialize(
            [raw_events, shopper_analytics],
            resources=resources,
            instance=instance,
            run_config={"ops": {"raw_events": {"config": {"topic": kafka.topic, "ranges": ranges}}}},
        )
        assert loaded.success and loaded.asset_materializations_for_node("shopper_analytics") == []
    assert _queued(postgres) > 0

    # Not while an ingest run is in flight (its step applies the queue), nor before the queue is old enough.
    in_flight = create_run_for_test(instance, job_name="ingest_events", status=dg.DagsterRunStatus.STARTED)
    busy = _tick(sensor, instance, postgres)
    assert isinstance(busy, dg.SkipReason) and "in progress" in (busy.skip_message or "")
    instance.report_run_failed(in_flight)
    young = _tick(build_sessions_sensor(stranded_after_s=3600), instance, postgres)
    assert isinstance(young, dg.SkipReason) and "waiting for a run" in (young.skip_message or "")

    request = _tick(sensor, instance, postgres)
    assert isinstance(request, dg.RunRequest)
    again = _tick(sensor, instance, postgres)
    assert isinstance(again, dg.RunRequest) and again.run_key == request.run_key, "one request per queue"
    assert set(request.asset_selection or []) == set(ASSET_KEYS)

    # A failed sweep: the next attempt waits for the backoff, then comes with the next run key.
    failed = create_run_for_test(
        instance, job_name="ingest_events", tags=dict(request.tags), status=dg.DagsterRunStatus.STARTED
    )
    instance.report_run_failed(failed)
    backing_off = _tick(sensor, instance, postgres)
    assert isinstance(backing_off, dg.SkipReason) and "1 sweeps of the queue failed" in (
        backing_off.skip_message or ""
    )
    retry = _tick(build_sessions_sensor(stranded_after_s=0, retry_backoff_s=0), instance, postgres)
    assert isinstance(retry, dg.RunRequest) and retry.run_key == (request.run_key or "")[:-1] + "2"
    request = retry

    # The request as the daemon launches it: the ingest job, the sessions step alone, no deferral.
    for key, value in {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "CLICKSTREAM_TOPIC": kafka.topic,
        "DATABASE_URL": postgres.url,
        "SPARK_REMOTE": "",
        "SLACK_WEBHOOK_URL": "",
        "CLICKSTREAM_DAGSTER_URL": "http://127.0.0.1:3000",
    }.items():
        monkeypatch.setenv(key, value)
    job = definitions.defs.resolve_job_def(request.job_name or "ingest_events")
    subset = job.get_subset(
        asset_selection=set(request.asset_selection or []),
        asset_check_selection=set(request.asset_check_keys or []),
    )
    run = subset.execute_in_process(run_config=request.run_config, instance=instance, tags=request.tags)
    assert run.success
    assert {m.asset_key for m in run.asset_materializations_for_node("shopper_analytics")} == set(ASSET_KEYS)
    checks = run.get_asset_check_evaluations()
    assert len(checks) == 3 and all(c.passed for c in checks)
    assert _queued(postgres) == 0
    _matches_pandas(postgres)
    done = _tick(sensor, instance, postgres)
    assert isinstance(done, dg.SkipReason) and "nothing queued" in (done.skip_message or "")
