"""The daily job's training window on events ingested through the real path (Kafka -> raw_events ->
PostgreSQL): by default the last 180 days of event time, exactly the events pandas selects from what was
produced, read without scanning the older history's newest time."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pandas as pd
import psycopg

from clickstream_dagster.assets.ingestion import raw_events
from clickstream_dagster.assets.ml import DatasetConfig
from clickstream_dagster.clients.kafka import KafkaClient
from clickstream_dagster.ml.source import DAY_MS, read_training_input
from clickstream_dagster.resources import PostgresResource
from tests.assets.conftest import produce, random_events


def test_the_default_window_is_the_last_180_days_of_event_time(
    kafka: KafkaClient, postgres: PostgresResource, resources: dict[str, Any], instance: dg.DagsterInstance
) -> None:
    events = random_events(3_000, seed=17, span_ms=400 * DAY_MS)  # more than a year of history
    produce(kafka, events)
    ranges = [{"partition": p, "start": 0, "end": e} for p, e in kafka.end_offsets().items()]
    loaded = dg.materialize(
        [raw_events],
        resources=resources,
        instance=instance,
        run_config={"ops": {"raw_events": {"config": {"topic": kafka.topic, "ranges": ranges}}}},
    )
    assert loaded.success
    window = DatasetConfig().window_days
    assert window == 180.0
    frame = pd.DataFrame(events, columns=["timestamp", "visitorid", "event", "itemid", "transactionid"])
    since = int(frame["timestamp"].max()) - int(window * DAY_MS)
    expected = frame[frame["timestamp"] >= since].sort_values(["timestamp", "visitorid", "itemid"])
    with psycopg.connect(postgres.conninfo) as conn:
        read = read_training_input(conn, window)
        everything = read_training_input(conn, None)
    got = read.events.sort_values(["timestamp", "visitorid", "itemid"])
    assert read.since_ms == since and 0 < len(got) < len(frame)
    assert got[["timestamp", "visitorid", "event", "itemid"]].to_numpy().tolist() == (
        expected[["timestamp", "visitorid", "event", "itemid"]].to_numpy().tolist()
    )
    assert len(everything.events) == len(frame) and everything.since_ms == 0
