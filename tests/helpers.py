"""Small helpers shared by tests (no fixtures here: those live in conftest.py)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

import confluent_kafka
import psycopg
from kafka import KafkaConsumer, TopicPartition

from clickstream_dagster.ingestion import months


def read_topic(bootstrap_servers: str, topic: str, timeout_s: float = 30.0) -> list[Any]:
    """Every record currently in `topic`, partition by partition in offset order."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False, max_poll_records=50_000
    )
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or [])
        tps = [TopicPartition(topic, p) for p in partitions]
        ends = consumer.end_offsets(tps)
        consumer.assign(tps)
        consumer.seek_to_beginning()
        out: dict[int, list[Any]] = {p: [] for p in partitions}
        remaining = {tp.partition for tp in tps if ends[tp] > 0}
        import time

        deadline = time.monotonic() + timeout_s
        while remaining and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=1000).items():
                out[tp.partition].extend(records)
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp.partition)
        if remaining:
            raise TimeoutError(f"could not read partitions {sorted(remaining)} of {topic} to the end")
        return [r for p in partitions for r in out[p]]
    finally:
        consumer.close()


def header(record: Any, name: str) -> bytes:
    return dict(record.headers or [])[name]


def committed_in_topic(bootstrap: str, topic: str, partitions: int) -> dict[tuple[int, int], bytes | None]:
    """Every message a read_committed consumer gets from the topic, by (partition, offset): the independent
    side of the recount (a plain consumer read to the end of each partition)."""
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"recount-{uuid.uuid4().hex[:6]}",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign(
        [
            confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
            for p in range(partitions)
        ]
    )
    out: dict[tuple[int, int], bytes | None] = {}
    at_end: set[int] = set()
    deadline = time.monotonic() + 180
    while len(at_end) < partitions and time.monotonic() < deadline:
        for msg in consumer.consume(10_000, 1.0):
            err = msg.error()
            if err is not None:
                if err.code() == confluent_kafka.KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())  # type: ignore[arg-type]
                continue
            out[(msg.partition(), msg.offset())] = msg.value()  # type: ignore[index]
    consumer.close()
    assert len(at_end) == partitions, "the recount read every partition to its end"
    return out


def event_months(conn: psycopg.Connection[Any], timestamps: Iterable[int]) -> None:
    """The months of clickstream_events these event times (epoch ms) need, for a test that writes rows itself
    (the loader creates its own)."""
    with conn.cursor() as cur:
        months.ensure(cur, months.months_of(list(timestamps)))
