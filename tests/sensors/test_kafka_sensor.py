"""The Kafka offset sensor on a real broker and a real Dagster instance."""

from __future__ import annotations

import itertools
import json
from typing import Any

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test

from clickstream_dagster.clients.kafka import KafkaClient
from clickstream_dagster.ingestion.ranges import from_tag
from clickstream_dagster.ingestion.reader import DEFAULT_BATCH_SIZE
from clickstream_dagster.resources import PostgresResource
from clickstream_dagster.resources.kafka import KafkaResource
from clickstream_dagster.sensors.kafka import build_kafka_sensor
from tests.assets.conftest import produce, random_events


def _tick(
    sensor: dg.SensorDefinition,
    instance: dg.DagsterInstance,
    kafka: KafkaClient,
    cursor: str | None,
    postgres: PostgresResource | None = None,
) -> Any:
    # Kafka is asked first: a test of an unreachable broker never reaches this database.
    pg = postgres or PostgresResource(url="postgresql://nobody@127.0.0.1:1/none")
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"kafka": KafkaResource.for_client(kafka), "postgres": pg}
    ) as context:
        return sensor(context)


def _launch(instance: dg.DagsterInstance, requests: list[dg.RunRequest]) -> None:
    """What the daemon does with a tick's requests: the runs exist (here: started, never finishing)."""
    for request in requests:
        create_run_for_test(
            instance, job_name="ingest_events", tags=dict(request.tags), status=dg.DagsterRunStatus.STARTED
        )


def _ranges(request: dg.RunRequest) -> list[dict[str, int]]:
    return request.run_config["ops"]["raw_events"]["config"]["ranges"]


@pytest.mark.rehearsal  # also run against the 3-broker, Spark-cluster rehearsal
def test_cursor_and_run_keys_follow_the_topic(kafka: KafkaClient, postgres: PostgresResource) -> None:
    sensor = build_kafka_sensor(max_events_per_run=1_000, max_runs_per_tick=2, max_active_runs=10)
    with dg.instance_for_test() as instance:
        first = _tick(sensor, instance, kafka, None, postgres)
        assert isinstance(first, dg.SkipReason) and "no new messages" in (first.skip_message or "")

        produce(kafka, random_events(2_500, seed=31))
        ends = kafka.end_offsets()
        result = _tick(sensor, instance, kafka, None, postgres)
        assert isinstance(result, dg.SensorResult) and result.cursor
        requests = list(result.run_requests or [])
        assert len(requests) == 2, "capped: two full-size runs this tick"
        covered = [r for req in requests for r in _ranges(req)]
        assert all(sum(r["end"] - r["start"] for r in _ranges(req)) == 1_000 for req in requests)
        cursor = json.loads(result.cursor)
        assert sum(cursor.values()) == 2_000
        # Ranges are contiguous from 0 and end where the cursor now points.
        for p in ends:
            mine = sorted((r["start"], r["end"]) for r in covered if r["partition"] == p)
            assert mine[0][0] == 0 and all(a[1] == b[0] for a, b in itertools.pairwise(mine))
            assert mine[-1][1] == cursor[str(p)]
        # Payloads never travel in run config: only offsets (and the asset's config class fills in its
        # batch size default).
        config = requests[0].run_config["ops"]["raw_events"]["config"]
        assert set(config) == {"topic", "ranges", "batch_size"}
        assert config["batch_size"] == DEFAULT_BATCH_SIZE
        assert all(set(r) == {"partition", "start", "end"} for r in config["ranges"])
        # The ranges travel as a tag too (what the ledger's contiguity check knows to be in flight).
        tagged = from_tag(requests[0].tags["clickstream/ranges"])
        assert [(r.partition, r.start, r.end) for r in tagged] == [
            (r["partition"], r["start"], r["end"]) for r in _ranges(requests[0])
        ]

        # Deterministic keys: evaluating the same tick again yields the same run keys.
        again = _tick(sensor, instance, kafka, None, postgres)
        assert [r.run_key for r in again.run_requests] == [r.run_key for r in requests]

        _launch(instance, requests)
        rest = _tick(sensor, instance, kafka, result.cursor, postgres)
        assert sum(sum(r["end"] - r["start"] for r in _ranges(req)) for req in rest.run_requests) == 500
        assert json.loads(rest.cursor) == {str(p): e for p, e in ends.items()}
        _launch(instance, list(rest.run_requests or []))
        assert isinstance(_tick(sensor, instance, kafka, rest.cursor, postgres), dg.SkipReason)


def test_unreachable_broker_is_a_skip_not_a_crash() -> None:
    sensor = build_kafka_sensor(broker_timeout_ms=1_000)
    dead = KafkaClient(bootstrap_servers="127.0.0.1:1", topic="x", request_timeout_ms=1_000)
    with dg.instance_for_test() as instance:
        result = _tick(sensor, instance, dead, None)
    assert isinstance(result, dg.SkipReason)
    assert "Kafka not reachable" in (result.skip_message or "")


def test_missing_topic_is_a_skip(bootstrap_servers: str) -> None:
    sensor = build_kafka_sensor()
    with dg.instance_for_test() as instance:
        result = _tick(
            sensor, instance, KafkaClient(bootstrap_servers=bootstrap_servers, topic="nope-x"), None
        )
    assert isinstance(result, dg.SkipReason) and "does not exist" in (result.skip_message or "")


def test_third_run_in_flight_only_when_not_catching_up(
    kafka: KafkaClient, postgres: PostgresResource
) -> None:
    # The cursors below are made up (no runs covered what they skip): no repairs of those "gaps" here.
    sensor = build_kafka_sensor(
        max_events_per_run=1_000, max_active_runs=3, max_active_runs_catching_up=2, max_repair_attempts=0
    )
    produce(kafka, random_events(2_500, seed=32))
    ends = kafka.end_offsets()
    with dg.instance_for_test() as instance:
        for _ in range(2):
            create_run_for_test(instance, job_name="ingest_events", status=dg.DagsterRunStatus.STARTED)

        # 2,500 waiting, more than one run's worth: catching up, two runs in flight are enough.
        behind = _tick(sensor, instance, kafka, None, postgres)
        assert isinstance(behind, dg.SkipReason)
        assert "at most 2 while 2,500 messages are waiting" in (behind.skip_message or "")

        # 300 waiting: live, the third slot takes them.
        near_end = json.dumps({str(p): max(0, e - 100) for p, e in ends.items()})
        live = _tick(sensor, instance, kafka, near_end, postgres)
        assert isinstance(live, dg.SensorResult)
        (request,) = live.run_requests or []
        assert sum(r["end"] - r["start"] for r in _ranges(request)) == sum(min(100, e) for e in ends.values())

        create_run_for_test(instance, job_name="ingest_events", status=dg.DagsterRunStatus.STARTED)
        full = _tick(sensor, instance, kafka, near_end, postgres)
        assert isinstance(full, dg.SkipReason) and "at most 3" in (full.skip_message or "")


def test_a_crash_between_launching_runs_and_storing_the_cursor_never_plans_overlaps(
    kafka: KafkaClient, postgres: PostgresResource
) -> None:
    sensor = build_kafka_sensor(max_events_per_run=600, max_runs_per_tick=2, max_active_runs=10)
    produce(kafka, random_events(1_500, seed=33))
    with dg.instance_for_test() as instance:
        first = _tick(sensor, instance, kafka, None, postgres)
        launched = list(first.run_requests)[:1]  # the daemon launched one run, then died: cursor not stored
        _launch(instance, launched)
        produce(kafka, random_events(400, seed=34))  # and the topic moved on meanwhile
        again = _tick(sensor, instance, kafka, None, postgres)  # the stale cursor again
        requested = [r for req in [*launched, *again.run_requests] for r in _ranges(req)]
        ends = kafka.end_offsets()
        for p in ends:
            mine = sorted((r["start"], r["end"]) for r in requested if r["partition"] == p)
            assert mine[0][0] == 0 and all(a[1] == b[0] for a, b in itertools.pairwise(mine)), mine
        assert sum(r["end"] - r["start"] for r in requested) == sum(
            min(e, json.loads(again.cursor)[str(p)]) for p, e in ends.items()
        )
