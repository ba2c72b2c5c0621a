"""The pipeline exporter (monitoring/exporter.py) on a real broker and a real PostgreSQL, after real
ingestion runs: its figures against Kafka's own offsets and plain SQL over the stored rows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import dagster as dg
import psycopg
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from psycopg.types.json import Jsonb

from clickstream_dagster.analytics.sessions.update import update_sessions
from clickstream_dagster.assets.ingestion import raw_events
from clickstream_dagster.clients.kafka import KafkaClient
from clickstream_dagster.monitoring.exporter import PipelineExporter
from clickstream_dagster.resources import PostgresResource
from clickstream_dagster.resources.kafka import KafkaResource
from clickstream_dagster.sensors.kafka import build_kafka_sensor
from tests.assets.conftest import BAD_MESSAGES, produce, random_events
from tests.assets.test_offset_gaps import _tick
from tests.helpers import committed_in_topic


@pytest.fixture
def resources(kafka: KafkaClient, postgres: PostgresResource) -> dict[str, Any]:
    return {"kafka": KafkaResource.for_client(kafka), "postgres": postgres}


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


def _scrape(exporter: PipelineExporter) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    exporter.poll()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(generate_latest(exporter.registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _by_partition(samples: dict[tuple[tuple[str, str], ...], float], topic: str) -> dict[int, float]:
    return {int(dict(k)["partition"]): v for k, v in samples.items() if dict(k)["topic"] == topic}


def _run(resources: dict[str, Any], instance: dg.DagsterInstance, request: dg.RunRequest) -> None:
    """raw_events alone for one request (its blocking checks would fail on a ledger read only in part)."""
    dg.materialize(
        [raw_events],
        resources=resources,
        instance=instance,
        run_config=request.run_config,
        tags=dict(request.tags),
    )


def test_lag_totals_and_gaps_match_kafka_and_sql(
    kafka: KafkaClient, postgres: PostgresResource, resources: dict[str, Any], instance: dg.DagsterInstance
) -> None:
    topic = kafka.topic
    produce(kafka, random_events(3_000, seed=71), bad=BAD_MESSAGES)
    exporter = PipelineExporter(postgres.url, kafka.bootstrap_servers, None, topics=[topic])

    before = _scrape(exporter)
    ends = kafka.end_offsets()
    assert _by_partition(before["clickstream_kafka_end_offset"], topic) == ends
    assert _by_partition(before["clickstream_pipeline_consumer_lag_offsets"], topic) == ends  # nothing read
    assert before["clickstream_exporter_source_up"] == {
        (("source", "kafka"),): 1.0,
        (("source", "postgres"),): 1.0,
    }

    # Part of the backlog: one run of the sensor's first tick.
    sensor = build_kafka_sensor(max_events_per_run=700, max_runs_per_tick=10, max_active_runs=10)
    result = _tick(sensor, instance, resources, None)
    assert isinstance(result, dg.SensorResult)
    requests = list(result.run_requests or [])
    assert len(requests) >= 3
    _run(resources, instance, requests[0])
    planned = {int(p): e for p, e in json.loads(result.cursor or "{}").items()}
    more = _tick(sensor, instance, resources, result.cursor)  # records the plan (the first tick's cursor)
    later = list(more.run_requests or []) if isinstance(more, dg.SensorResult) else []
    part = _scrape(exporter)
    with psycopg.connect(postgres.url) as conn:
        read_to: dict[int, int] = dict(
            conn.execute(
                "SELECT kafka_partition, max(end_offset) FROM ingested_ranges WHERE kafka_topic = %s "
                "GROUP BY 1",
                (topic,),
            ).fetchall()
        )
        stored = conn.execute(
            "SELECT count(*) FROM clickstream_events WHERE kafka_topic = %s", (topic,)
        ).fetchone() or (0,)
        quarantined = conn.execute(
            "SELECT count(*) FROM quarantine WHERE kafka_topic = %s", (topic,)
        ).fetchone() or (0,)
    lag = _by_partition(part["clickstream_pipeline_consumer_lag_offsets"], topic)
    assert lag == {p: ends[p] - read_to.get(p, 0) for p in ends}
    assert 0 < sum(lag.values()) < sum(ends.values())
    assert part["clickstream_pipeline_events_ingested_total"][(("topic", topic),)] == stored[0] > 0
    assert part["clickstream_pipeline_events_quarantined_total"][(("topic", topic),)] == quarantined[0]
    unread = _by_partition(part["clickstream_pipeline_planned_unread_offsets"], topic)
    assert unread == {p: planned[p] - read_to.get(p, 0) for p in ends}  # requested, not run yet

    # The rest: lag 0, and the totals are every message Kafka holds (read back by a plain consumer).
    for request in [*requests[1:], *later]:
        _run(resources, instance, request)
    done = _scrape(exporter)
    assert set(_by_partition(done["clickstream_pipeline_consumer_lag_offsets"], topic).values()) == {0}
    in_topic = committed_in_topic(kafka.bootstrap_servers, topic, len(ends))
    total = (
        done["clickstream_pipeline_events_ingested_total"][(("topic", topic),)]
        + done["clickstream_pipeline_events_quarantined_total"][(("topic", topic),)]
    )
    assert total == len(in_topic) == 3_000 + len(BAD_MESSAGES)
    assert set(_by_partition(done["clickstream_pipeline_ledger_gap_offsets"], topic).values()) == {0}

    # A range lost from the ledger behind the read point is a gap of exactly its size.
    with psycopg.connect(postgres.url) as conn:
        removed = conn.execute(
            "DELETE FROM ingested_ranges WHERE (kafka_topic, kafka_partition, start_offset) = "
            "(SELECT kafka_topic, kafka_partition, min(start_offset) FROM ingested_ranges "
            " WHERE kafka_topic = %s GROUP BY 1, 2 ORDER BY 2 LIMIT 1) RETURNING kafka_partition, end_offset - start_offset",
            (topic,),
        ).fetchone()
    assert removed is not None
    gaps = _by_partition(_scrape(exporter)["clickstream_pipeline_ledger_gap_offsets"], topic)
    assert gaps[removed[0]] == removed[1] and sum(gaps.values()) == removed[1]


def test_windows_freshness_and_the_promoted_model(pg_url: str, kafka: KafkaClient) -> None:
    exporter = PipelineExporter(pg_url, kafka.bootstrap_servers, None)
    empty = _scrape(exporter)
    assert empty["clickstream_model_promoted_version"] == {(): 0.0}
    assert "clickstream_windowed_stats_freshness_seconds" not in empty  # no events yet
    with psycopg.connect(pg_url) as conn:
        # The newest event as the loading transaction records it (the exporter reads no event row).
        conn.execute(
            "INSERT INTO event_totals (event, event_count, unique_users, unique_items, last_timestamp) "
            "VALUES ('view', 1, 1, 1, extract(epoch FROM timestamptz '2015-06-01 12:07:00+00') * 1000)"
        )
        conn.execute(
            "INSERT INTO windowed_stats (window_start, window_end, event, event_count, unique_users, unique_items) "
            "VALUES ('2015-06-01 11:50:00+00', '2015-06-01 11:55:00+00', 'view', 1, 1, 1)"
        )
        # As the ML job stores them: every candidate type's validation metrics; the promoted type's are exported.
        metrics = {
            "validation": {
                "lightfm": {"ndcg@10": 0.25, "visitors": 300, "note": "x"},
                "item_knn": {"ndcg@10": 0.2, "visitors": 300},
            }
        }
        conn.execute(
            "INSERT INTO model_registry (model_type, params, data_window, cleaning, metrics, library_versions, "
            "artefact, artefact_sha256, status, reason, decided_at) VALUES ('lightfm', '{}', '{}', '{}', %s, '{}', "
            "'\\x00', 'x', 'promoted', 'test', now())",
            (Jsonb(metrics),),
        )
    seen = _scrape(exporter)
    assert seen["clickstream_windowed_stats_freshness_seconds"] == {(): 12 * 60.0}  # 11:55 -> 12:07
    assert seen["clickstream_windowed_stats_pending_windows"] == {(): 0.0}
    (version,) = seen["clickstream_model_promoted_version"].values()
    assert version >= 1
    assert seen["clickstream_model_validation_metric"] == {
        (("metric", "ndcg@10"),): 0.25,
        (("metric", "visitors"),): 300.0,
    }
    assert seen["clickstream_model_promoted_info"] == {
        (("model_type", "lightfm"), ("version", str(int(version)))): 1.0
    }


def test_sessions_freshness(pg_url: str, kafka: KafkaClient) -> None:
    exporter = PipelineExporter(pg_url, kafka.bootstrap_servers, None)
    empty = _scrape(exporter)
    assert empty["clickstream_sessions_pending_spans"] == {(): 0.0}
    assert empty["clickstream_sessions_oldest_pending_seconds"] == {(): 0.0}
    with psycopg.connect(pg_url) as conn:  # a span loaded 20 minutes ago, still waiting
        conn.execute(
            "INSERT INTO session_changes (visitorid, first_ms, last_ms, queued_at) "
            "VALUES (1, 0, 0, now() - interval '20 minutes'), (2, 0, 0, now())"
        )
    seen = _scrape(exporter)
    assert seen["clickstream_sessions_pending_spans"] == {(): 2.0}
    (waited,) = seen["clickstream_sessions_oldest_pending_seconds"].values()
    assert 20 * 60 <= waited < 21 * 60
    with psycopg.connect(pg_url, autocommit=True) as conn:
        update_sessions(conn)  # no such events: the spans are taken and nothing is written
    seen = _scrape(exporter)
    assert seen["clickstream_sessions_pending_spans"] == {(): 0.0}
    assert seen["clickstream_sessions_oldest_pending_seconds"] == {(): 0.0}
    assert seen["clickstream_sessions"] == {(): 0.0}


def test_an_unreachable_source_is_reported_not_fatal(kafka: KafkaClient) -> None:
    exporter = PipelineExporter("postgresql://nobody@127.0.0.1:1/none", kafka.bootstrap_servers, None)
    seen = _scrape(exporter)
    assert seen["clickstream_exporter_source_up"][(("source", "postgres"),)] == 0.0
    assert "clickstream_model_promoted_version" not in seen
