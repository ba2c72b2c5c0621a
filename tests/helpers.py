"""Small helpers shared by tests (no fixtures here: those live in conftest.py)."""

from __future__ import annotations

from typing import Any

from kafka import KafkaConsumer, TopicPartition


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
