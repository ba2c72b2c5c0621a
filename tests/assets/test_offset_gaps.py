"""Offsets are not dense: transactions, aborts, open transactions, compaction and retention on the real broker.

An external client (confluent-kafka, as any exactly-once upstream) writes valid events with Kafka
transactions. Every case ends with a recount against what the topic holds, read independently, and the
ledger's identity read + skipped + lost = end - start for every range.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import confluent_kafka
import dagster as dg
import psycopg
import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

from clickstream_dagster.assets.analytics import event_statistics, windowed_stats
from clickstream_dagster.assets.ingestion import raw_events, raw_events_checks
from clickstream_dagster.clients.kafka import KafkaClient
from clickstream_dagster.ingestion.ranges import OffsetRange
from clickstream_dagster.ingestion.reader import RangeReadError
from clickstream_dagster.ingestion.run import ingest_ranges
from clickstream_dagster.messages import encode_key, encode_value
from clickstream_dagster.resources import PostgresResource
from clickstream_dagster.resources.kafka import KafkaResource
from clickstream_dagster.sensors.kafka import build_kafka_sensor, ingest_run_config, ingest_run_tags
from tests.assets.conftest import random_events
from tests.assets.test_analytics import _assert_matches_independent_sql
from tests.assets.test_ingestion import _checks_alone
from tests.helpers import committed_in_topic

Event = tuple[int, int, str, int, int | None]


@pytest.fixture
def resources(connect_resources: dict[str, Any]) -> dict[str, Any]:
    """windowed_stats on the real Spark Connect server."""
    return connect_resources


def _message(e: Event) -> tuple[bytes, bytes]:
    return encode_key(e[1]), encode_value(*e)


class Transactions:
    """A transactional producer writing to explicit partitions."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.producer = confluent_kafka.Producer(
            {"bootstrap.servers": bootstrap, "transactional.id": f"tx-{uuid.uuid4().hex[:8]}"}
        )
        self.producer.init_transactions(30)

    def write(self, events: Sequence[Event], partition: int, commit: bool | None) -> None:
        """One transaction; commit=None leaves it open."""
        self.producer.begin_transaction()
        for e in events:
            key, value = _message(e)
            self.producer.produce(self.topic, key=key, value=value, partition=partition)
        self.producer.flush(30)
        if commit is True:
            self.producer.commit_transaction(30)
        elif commit is False:
            self.producer.abort_transaction(30)

    def commit(self) -> None:
        self.producer.commit_transaction(30)


def _plain(bootstrap: str, topic: str, events: Sequence[Event], partition: int) -> None:
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap})
    for e in events:
        key, value = _message(e)
        producer.produce(topic, key=key, value=value, partition=partition)
    producer.flush(30)


def _stored(conn: psycopg.Connection, topic: str) -> dict[tuple[int, int], tuple[Any, ...]]:
    rows = conn.execute(
        'SELECT kafka_partition, kafka_offset, "timestamp", visitorid, event, itemid, transactionid '
        "FROM clickstream_events WHERE kafka_topic = %s",
        (topic,),
    ).fetchall()
    return {(p, o): tuple(rest) for p, o, *rest in rows}


def _ledger(conn: psycopg.Connection, topic: str) -> list[dict[str, int]]:
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    return cur.execute(
        "SELECT kafka_partition AS partition, start_offset AS start, end_offset AS end, messages_read AS read, "
        "rows_inserted AS inserted, rows_quarantined AS quarantined, skipped_control AS control, "
        "skipped_aborted AS aborted, skipped_compacted AS compacted, lost_retention AS lost "
        "FROM ingested_ranges WHERE kafka_topic = %s ORDER BY 1, 2",
        (topic,),
    ).fetchall()


def _tick(
    sensor: dg.SensorDefinition, instance: dg.DagsterInstance, resources: dict[str, Any], cursor: str | None
) -> Any:
    with dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"kafka": resources["kafka"], "postgres": resources["postgres"]},
    ) as context:
        return sensor(context)


def _run(
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    request: dg.RunRequest,
    raise_on_error: bool = True,
    windows: bool = False,
) -> dg.ExecuteInJobResult:
    """What the daemon does with a request: a run with its tags and config (with windows: and the assets
    computed from raw_events, as in the ingest job)."""
    downstream = [windowed_stats, event_statistics] if windows else []
    return dg.materialize(
        [raw_events, *raw_events_checks, *downstream],
        resources=resources,
        instance=instance,
        run_config=request.run_config,
        tags=dict(request.tags),
        raise_on_error=raise_on_error,
    )


def _request(topic: str, ranges: list[OffsetRange]) -> dg.RunRequest:
    """A request as the sensor makes it, for ranges a test chose."""
    return dg.RunRequest(run_config=ingest_run_config(topic, ranges), tags=ingest_run_tags(topic, ranges))


def _checks(result: dg.ExecuteInJobResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def _assert_identity(ledger: list[dict[str, int]]) -> None:
    for r in ledger:
        assert (
            r["read"] + r["control"] + r["aborted"] + r["compacted"] + r["lost"] == r["end"] - r["start"]
        ), r


@pytest.mark.rehearsal  # also run against the 3-broker, Spark-cluster rehearsal
def test_transactions_aborts_and_open_transactions_lose_nothing(
    bootstrap_servers: str,
    topic_factory: Callable[..., str],
    postgres: PostgresResource,
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
) -> None:
    topic = topic_factory(partitions=3)
    kafka = KafkaClient(bootstrap_servers=bootstrap_servers, topic=topic)
    resources = {**resources, "kafka": KafkaResource.for_client(kafka)}
    events = iter(random_events(2_000, seed=71))

    def take(n: int) -> list[Event]:
        return [next(events) for _ in range(n)]

    tx = Transactions(bootstrap_servers, topic)
    # Partition 0: committed, aborted, plain, committed; then a transaction left open.
    tx.write(take(40), 0, commit=True)  # 40 + marker
    tx.write(take(25), 0, commit=False)  # 25 aborted + marker
    _plain(bootstrap_servers, topic, take(10), 0)
    tx.write(take(5), 0, commit=True)  # 5 + marker
    # Partition 1: interleaved with partition 0's open transaction below; partition 2: plain writes only.
    tx.write(take(30), 1, commit=False)  # 30 aborted + marker
    tx.write(take(20), 1, commit=True)  # 20 + marker
    _plain(bootstrap_servers, topic, take(50), 2)
    tx.write(take(7), 0, commit=None)  # open: nothing past its first offset may be planned

    sensor = build_kafka_sensor(max_events_per_run=10_000)
    first = _tick(sensor, instance, resources, None)
    (request,) = first.run_requests
    planned = {
        r["partition"]: (r["start"], r["end"])
        for r in request.run_config["ops"]["raw_events"]["config"]["ranges"]
    }
    # The last stable offset: partition 0 stops where its open transaction begins (40+1+25+1+10+5+1 = 83).
    assert planned == {0: (0, 83), 1: (0, 52), 2: (0, 50)}

    started = time.monotonic()
    result = _run(resources, instance, request, windows=True)
    assert time.monotonic() - started < 30, "markers and aborted records never stall a read"
    checks = _checks(result)
    assert all(c.passed for c in checks.values()), {
        n: c.description for n, c in checks.items() if not c.passed
    }
    with postgres.connection() as conn:
        ledger = _ledger(conn, topic)
    _assert_identity(ledger)
    by_partition = {r["partition"]: r for r in ledger}
    assert (by_partition[0]["read"], by_partition[0]["control"], by_partition[0]["aborted"]) == (55, 3, 25)
    assert (by_partition[1]["read"], by_partition[1]["control"], by_partition[1]["aborted"]) == (20, 2, 30)
    assert (by_partition[2]["read"], by_partition[2]["control"], by_partition[2]["aborted"]) == (50, 0, 0)

    # The open transaction commits; the next tick plans the rest, and everything committed is stored once.
    tx.commit()
    _run(resources, instance, request, windows=True)  # a re-run of the same range adds nothing
    second = _tick(sensor, instance, resources, first.cursor)
    for req in second.run_requests:
        assert _run(resources, instance, req, windows=True).success
    committed = committed_in_topic(bootstrap_servers, topic, 3)
    with postgres.connection() as conn:
        stored = _stored(conn, topic)
        ledger = _ledger(conn, topic)
    _assert_identity(ledger)
    assert set(stored) == set(committed), "exactly the committed messages, by source coordinates"
    assert len(stored) == 40 + 10 + 5 + 7 + 20 + 50
    assert sum(r["aborted"] for r in ledger) == 25 + 30
    _assert_matches_independent_sql(postgres)


def test_compacted_topic_accounts_for_removed_offsets(
    bootstrap_servers: str,
    postgres: PostgresResource,
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
) -> None:
    topic = f"compacted-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    config = {
        "cleanup.policy": "compact",
        "segment.ms": "100",
        "min.cleanable.dirty.ratio": "0.001",
        "min.compaction.lag.ms": "0",
        "delete.retention.ms": "0",
    }
    admin.create_topics([NewTopic(topic, 1, 1, config=config)])[topic].result(30)
    # 400 events of 20 visitors (keys): compaction keeps about the last one per key of each cleaned segment.
    events = [(1_433_000_000_000 + i, i % 20, "view", i, None) for i in range(400)]
    _plain(bootstrap_servers, topic, events[:200], 0)
    time.sleep(0.5)
    _plain(bootstrap_servers, topic, events[200:], 0)  # rolls the first segment: it can be cleaned
    produced = 400
    deadline = time.monotonic() + 90
    while len(committed_in_topic(bootstrap_servers, topic, 1)) == produced:
        assert time.monotonic() < deadline, "the log cleaner compacted the topic within 90 s"
        _plain(bootstrap_servers, topic, events[:1], 0)  # keep rolling segments
        produced += 1
        time.sleep(2)
    # Compaction made its holes; stop the cleaner from making more while the test reads (a cleaning under a
    # read is a real case, but not this test's: the read would find the log changed and leave a gap).
    entry = ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.SET)
    admin.incremental_alter_configs([ConfigResource("topic", topic, incremental_configs=[entry])])[
        ConfigResource("topic", topic)
    ].result(30)
    time.sleep(2)
    kafka = KafkaClient(bootstrap_servers=bootstrap_servers, topic=topic)
    end = kafka.end_offsets()[0]
    in_topic = committed_in_topic(bootstrap_servers, topic, 1)
    request = _request(topic, [OffsetRange(0, 0, end)])
    result = _run({**resources, "kafka": KafkaResource.for_client(kafka)}, instance, request, windows=True)
    checks = _checks(result)
    assert all(c.passed for c in checks.values()), {
        n: c.description for n, c in checks.items() if not c.passed
    }
    _assert_matches_independent_sql(postgres)
    with postgres.connection() as conn:
        (row,) = _ledger(conn, topic)
        stored = _stored(conn, topic)
    _assert_identity([row])
    assert row["compacted"] == end - len(in_topic) > 0
    assert row["read"] == len(in_topic) and set(stored) == set(in_topic)


def test_offsets_deleted_by_retention_are_lost_loudly(
    bootstrap_servers: str,
    topic_factory: Callable[..., str],
    postgres: PostgresResource,
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
) -> None:
    topic = topic_factory(partitions=2)
    kafka = KafkaClient(bootstrap_servers=bootstrap_servers, topic=topic)
    _plain(bootstrap_servers, topic, random_events(300, seed=72), 0)
    _plain(bootstrap_servers, topic, random_events(100, seed=73), 1)
    # Retention (here DeleteRecords, which moves the log start the same way) takes partition 0's first 120.
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    futures = admin.delete_records([confluent_kafka.TopicPartition(topic, 0, 120)])
    for f in futures.values():
        f.result(30)
    request = _request(topic, [OffsetRange(0, 0, 300), OffsetRange(1, 0, 100)])
    result = _run(
        {**resources, "kafka": KafkaResource.for_client(kafka)}, instance, request, raise_on_error=False
    )
    checks = _checks(result)
    assert not checks["no_offsets_lost"].passed, "a blocking check fails on offsets lost to retention"
    assert checks["no_offsets_lost"].metadata["lost_offsets"].value == 120
    assert checks["offsets_reconcile"].passed and checks["ledger_contiguous"].passed
    assert not result.success, "the run fails (and the failure alert fires)"
    with postgres.connection() as conn:
        ledger = _ledger(conn, topic)
        stored = _stored(conn, topic)
    _assert_identity(ledger)
    assert [(r["partition"], r["read"], r["lost"]) for r in ledger] == [(0, 180, 120), (1, 100, 0)]
    assert len(stored) == 280 and min(o for p, o in stored if p == 0) == 120
    # The blocking check stopped the run before the windows; the next run's windows take the rows in.
    later = dg.materialize(
        [raw_events, windowed_stats, event_statistics],
        resources={**resources, "kafka": KafkaResource.for_client(kafka)},
        instance=instance,
        selection=[windowed_stats, event_statistics],
    )
    assert later.success
    _assert_matches_independent_sql(postgres)


def test_an_unreadable_partition_never_holds_back_the_others(
    kafka: KafkaClient, postgres: PostgresResource
) -> None:
    _plain(kafka.bootstrap_servers, kafka.topic, random_events(200, seed=74), 0)
    _plain(kafka.bootstrap_servers, kafka.topic, random_events(150, seed=75), 1)
    # Partition 0's range reaches past anything that will ever be written (a broken plan): it cannot finish.
    ranges = [OffsetRange(0, 0, 250), OffsetRange(1, 0, 150)]
    with (
        kafka.bulk_consumer() as consumer,
        postgres.connection() as conn,
        pytest.raises(RangeReadError, match="partitions \\{0: 'no message for 3 s"),
    ):
        ingest_ranges(consumer, conn, kafka.topic, ranges, "run-1", stall_timeout_s=3)
    with postgres.connection() as conn:
        ledger = _ledger(conn, kafka.topic)
        stored = _stored(conn, kafka.topic)
    assert [(r["partition"], r["start"], r["end"], r["read"]) for r in ledger] == [(1, 0, 150, 150)]
    assert len([k for k in stored if k[0] == 1]) == 150, "partition 1 is stored and recorded"
    assert len([k for k in stored if k[0] == 0]) == 200, (
        "partition 0's messages are stored; its range is a gap"
    )


def test_a_gap_in_the_ledger_fails_the_check_until_the_sensor_heals_it(
    kafka: KafkaClient, postgres: PostgresResource, resources: dict[str, Any], instance: dg.DagsterInstance
) -> None:
    produce_events = random_events(900, seed=76)
    for p in range(3):
        _plain(kafka.bootstrap_servers, kafka.topic, produce_events[p * 300 : (p + 1) * 300], p)
    sensor = build_kafka_sensor(
        max_events_per_run=300, repair_grace_s=0, repair_backoff_s=0, max_repair_attempts=2
    )
    first = _tick(sensor, instance, resources, None)
    assert len(first.run_requests) == 3
    for request in first.run_requests:
        assert _run(resources, instance, request).success
    idle = _tick(sensor, instance, resources, first.cursor)  # records the plan up to the cursor
    assert isinstance(idle, dg.SkipReason)
    assert _checks_alone(resources, instance)["ledger_contiguous"].passed

    with postgres.connection() as conn:
        (deleted,) = conn.execute(
            "DELETE FROM ingested_ranges WHERE kafka_topic = %s AND kafka_partition = 1 "
            "AND start_offset = (SELECT min(start_offset) FROM ingested_ranges WHERE kafka_topic = %s "
            "AND kafka_partition = 1) RETURNING start_offset, end_offset",
            (kafka.topic, kafka.topic),
        ).fetchall()
    check = _checks_alone(resources, instance)["ledger_contiguous"]
    assert not check.passed
    assert check.description == f"gap {kafka.topic}/1 [{deleted[0]}, {deleted[1]})"

    heal = _tick(sensor, instance, resources, first.cursor)
    (repair,) = heal.run_requests
    assert repair.run_key == f"repair/{kafka.topic}/1:{deleted[0]}-{deleted[1]}/1"
    assert _run(resources, instance, repair).success
    checks = _checks_alone(resources, instance)
    assert all(c.passed for c in checks.values()), {
        n: c.description for n, c in checks.items() if not c.passed
    }
    with postgres.connection() as conn:
        stored = _stored(conn, kafka.topic)
        _assert_identity(_ledger(conn, kafka.topic))
    assert set(stored) == set(committed_in_topic(kafka.bootstrap_servers, kafka.topic, 3))
    assert len(stored) == 900
    assert isinstance(_tick(sensor, instance, resources, first.cursor), dg.SkipReason), (
        "healed: nothing to repair"
    )

    # Bounded: a gap whose repairs never land is requested max_repair_attempts times, with backoff between.
    with postgres.connection() as conn:
        conn.execute(
            "DELETE FROM ingested_ranges WHERE kafka_topic = %s AND kafka_partition = 2", (kafka.topic,)
        )
    patient = build_kafka_sensor(
        max_events_per_run=300, repair_grace_s=0, repair_backoff_s=3600, max_repair_attempts=2
    )
    keys = [r.run_key for r in _tick(patient, instance, resources, first.cursor).run_requests]
    assert keys == [f"repair/{kafka.topic}/2:0-300/1"]
    assert isinstance(_tick(patient, instance, resources, first.cursor), dg.SkipReason), "backing off"
    keys = [r.run_key for r in _tick(sensor, instance, resources, first.cursor).run_requests]
    assert keys == [f"repair/{kafka.topic}/2:0-300/2"]
    assert isinstance(_tick(sensor, instance, resources, first.cursor), dg.SkipReason), "attempts exhausted"
    assert not _checks_alone(resources, instance)["ledger_contiguous"].passed, "and the gap stays named"


def test_quarantine_reasons_are_kinds_and_oversized_payloads_are_never_stored_whole(
    kafka: KafkaClient, postgres: PostgresResource, resources: dict[str, Any], instance: dg.DagsterInstance
) -> None:
    huge = b'{"v":1,"pad":"' + b"x" * 2_000_000 + b'"}'  # compresses to a few KiB: the broker takes it
    bad = {
        huge: "oversized: 2000016 bytes > 16384",
        b'{"v":1,"timestamp":1433000000000,"visitorid":-1,"event":"view","itemid":1,"transactionid":null,'
        b'"visitorid":5}': "ambiguous: duplicated key 'visitorid'",
        b'{"v":true,"timestamp":1433000000000,"visitorid":1,"event":"view","itemid":1,"transactionid":null}': (
            "unsupported format version: true"
        ),
        b'{"v":1,"timestamp":-5,"visitorid":1,"event":"view","itemid":1,"transactionid":null}': (
            "timestamp out of range: -5"
        ),
        b'{"v":1,"visitorid":"\xff"}': "invalid UTF-8: byte 0xff at byte position 20 (invalid start byte)",
    }
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "compression.type": "gzip",
            "message.max.bytes": 4_000_000,
        }
    )
    for value in bad:
        producer.produce(kafka.topic, value=value, partition=0)
    producer.flush(30)
    request = _request(kafka.topic, [OffsetRange(0, 0, 5)])
    assert _run(resources, instance, request).success
    with postgres.connection() as conn:
        rows = conn.execute(
            "SELECT kafka_offset, reason, raw_payload, payload_bytes, payload_sha256, payload_truncated "
            "FROM quarantine WHERE kafka_topic = %s ORDER BY kafka_offset",
            (kafka.topic,),
        ).fetchall()
    assert [r[1] for r in rows] == list(bad.values())
    offset, _, prefix, size, digest, truncated = rows[0]
    assert (offset, size, truncated) == (0, len(huge), True)
    assert bytes(prefix) == huge[:1024] and bytes(digest) == hashlib.sha256(huge).digest()
    assert all(bytes(r[2]) == value and not r[5] for r, value in zip(rows[1:], list(bad)[1:], strict=True))
