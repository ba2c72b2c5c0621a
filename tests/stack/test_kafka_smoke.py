"""The embedded broker is a real Apache Kafka: kafka-python and Kafka's own tools both talk to it."""

from __future__ import annotations

from collections.abc import Callable

from kafka import TopicPartition

from clickstream_dagster.clients.kafka import KafkaClient
from clickstream_dagster.stack.config import StackConfig
from clickstream_dagster.stack.kafka import run_tool


def test_produce_and_consume_round_trip(bootstrap_servers: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory(partitions=2)
    kafka = KafkaClient(bootstrap_servers=bootstrap_servers, topic=topic)
    sent = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(500)}
    with kafka.producer() as producer:
        futures = [producer.send(topic, key=k, value=v) for k, v in sent.items()]
        producer.flush()
        partitions = {f.get(timeout=10).partition for f in futures}
    assert partitions == {0, 1}, "keys should spread over both partitions"

    ends = kafka.end_offsets()
    assert sum(ends.values()) == len(sent)

    received: dict[bytes, bytes] = {}
    with kafka.consumer() as consumer:
        consumer.assign([TopicPartition(topic, p) for p in ends])
        consumer.seek_to_beginning()
        while len(received) < len(sent):
            batch = consumer.poll(timeout_ms=5000)
            assert batch, f"consumer stalled after {len(received)} records"
            for records in batch.values():
                received.update((r.key, r.value) for r in records)
    assert received == sent


def test_kafka_topics_tool_lists_topics(stack_config: StackConfig, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory(partitions=1)
    result = run_tool(
        stack_config, "kafka-topics", ["--bootstrap-server", stack_config.bootstrap_servers, "--list"]
    )
    assert result.returncode == 0, result.stderr
    assert topic in result.stdout.split()


def test_end_offsets_of_missing_topic_is_empty(bootstrap_servers: str) -> None:
    assert KafkaClient(bootstrap_servers=bootstrap_servers).end_offsets("no-such-topic-xyz") == {}
