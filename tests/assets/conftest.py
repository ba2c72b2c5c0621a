"""Fixtures for asset tests: real Kafka topic, real Postgres database, real Spark (local session)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pytest

from clickstream_dagster.clients.kafka import KafkaClient
from clickstream_dagster.messages import encode_key, encode_value
from clickstream_dagster.resources import PostgresResource, SlackResource, SparkResource
from clickstream_dagster.resources.kafka import KafkaResource


@dataclass
class Produced:
    events: list[
        tuple[int, int, str, int, int | None]
    ]  # (timestamp, visitorid, event, itemid, transactionid)
    bad: list[tuple[bytes | None, str]]  # (raw value, expected reason fragment)


def random_events(
    n: int, seed: int = 1, start_ms: int = 1_433_000_000_000, span_ms: int = 3_600_000
) -> list[Any]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        event = rng.choices(["view", "addtocart", "transaction"], weights=[90, 7, 3])[0]
        out.append(
            (
                start_ms + rng.randrange(span_ms),
                rng.randrange(200),
                event,
                rng.randrange(300),
                rng.randrange(10_000) if event == "transaction" else None,
            )
        )
    return out


BAD_MESSAGES: list[tuple[bytes | None, str]] = [
    (b"this is not json", "not JSON"),
    (b'{"v":1,"timestamp":1433000000000,"event":"view","itemid":1,"transactionid":null}', "missing field"),
    (
        b'{"v":1,"timestamp":"soon","visitorid":1,"event":"view","itemid":1,"transactionid":null}',
        "wrong type",
    ),
    (
        b'{"v":1,"timestamp":1433000000000,"visitorid":1,"event":"click","itemid":1,"transactionid":null}',
        "unknown event",
    ),
    (
        b'{"v":1,"timestamp":1433000000000,"visitorid":-4,"event":"view","itemid":1,"transactionid":null}',
        "negative id",
    ),
    (b'{"v":1,"pad":"' + b"x" * 20_000 + b'"}', "oversized"),
]


def produce(kafka: KafkaClient, events: list[Any], bad: list[tuple[bytes | None, str]] | None = None) -> None:
    """Send `events` (and the raw `bad` values spread evenly between them) to the resource's topic."""
    messages: list[tuple[bytes, bytes | None]] = [(encode_key(e[1]), encode_value(*e)) for e in events]
    bad = bad or []
    step = max(1, len(messages) // (len(bad) + 1))
    for j, (raw, _) in enumerate(bad):
        messages.insert((j + 1) * step + j, (b"bad", raw))
    with kafka.producer() as producer:
        for key, value in messages:
            producer.send(kafka.topic, key=key, value=value)
        producer.flush()


@pytest.fixture
def resources(kafka: KafkaClient, postgres: PostgresResource) -> Iterator[dict[str, Any]]:
    spark = SparkResource(master="local[2]")
    yield {
        "kafka": KafkaResource.for_client(kafka),
        "postgres": postgres,
        "spark": spark,
        "slack": SlackResource(),
    }
    spark.stop()


@pytest.fixture
def connect_resources(
    kafka: KafkaClient, postgres: PostgresResource, spark_connect_endpoint: str
) -> Iterator[dict[str, Any]]:
    """As `resources`, with windowed_stats on the session's real Spark Connect server (as `up` runs it)."""
    spark = SparkResource(remote=spark_connect_endpoint)
    yield {
        "kafka": KafkaResource.for_client(kafka),
        "postgres": postgres,
        "spark": spark,
        "slack": SlackResource(),
    }
    spark.stop()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def full_ranges(kafka: KafkaClient) -> Callable[[], list[dict[str, int]]]:
    def ranges() -> list[dict[str, int]]:
        return [{"partition": p, "start": 0, "end": end} for p, end in kafka.end_offsets().items()]

    return ranges
