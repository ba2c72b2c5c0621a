"""Reading exact Kafka offset ranges and loading them into PostgreSQL, effectively once.

`read_ranges` assigns exact offsets (no consumer group, no commits) with librdkafka and stops at each range's
end offset, so the same range always yields the same messages. `load_batch` COPYs the events whose source
coordinates are not stored yet straight into clickstream_events (`pipeline.columns`), in one transaction
together with the quarantine rows, the batch's window deltas and the per event type totals; the range ledger
follows once every batch of the ranges is in. A run killed anywhere leaves either all of a batch or none of
it, and re-running any range never duplicates.

The COPY runs outside any lock, so the batches of concurrent runs insert in parallel. Only then does a
transaction take the ingest lock, to add the events it inserted to the distinct sets (`pipeline.distinct`):
one batch at a time, each counted against every batch committed before it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import confluent_kafka
import numpy as np
import psycopg

from clickstream_dagster.messages import MessageError, decode_fields
from clickstream_dagster.pipeline import distinct
from clickstream_dagster.pipeline.columns import EventColumns
from clickstream_dagster.sql import queries as q

# Messages per consume() call: large enough to amortise the call, small enough to yield batches on time.
CONSUME_CHUNK = 10_000

# Inserts of one batch that other transactions' rows of the same offsets may interrupt before it gives up.
MAX_INSERT_ATTEMPTS = 5

# Messages per loading transaction (raw_events' default too): a whole catching-up run; a steady stream's runs
# are far smaller.
DEFAULT_BATCH_SIZE = 500_000


@dataclass(frozen=True)
class OffsetRange:
    partition: int
    start: int  # inclusive
    end: int  # exclusive

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass
class Batch:
    """Parsed messages of one read: good rows for clickstream_events, bad ones for the quarantine.

    events: (timestamp, visitorid, event, itemid, transactionid, produced_ms, partition, offset), each
        partition's in offset order
    rejects: (partition, offset, raw value, reason)
    """

    topic: str
    events: list[tuple[object, ...]] = field(default_factory=list)
    rejects: list[tuple[object, ...]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.events) + len(self.rejects)


@dataclass
class LoadResult:
    messages: int = 0
    inserted: int = 0
    quarantined: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    inserted_by_partition: Counter[int] = field(default_factory=Counter)
    quarantined_by_partition: Counter[int] = field(default_factory=Counter)

    def add(self, other: LoadResult) -> None:
        self.messages += other.messages
        self.inserted += other.inserted
        self.quarantined += other.quarantined
        self.reasons.update(other.reasons)
        self.inserted_by_partition.update(other.inserted_by_partition)
        self.quarantined_by_partition.update(other.quarantined_by_partition)


class RangeReadError(RuntimeError):
    pass


def parse_record(partition: int, offset: int, value: bytes | None, produced_ms: int, batch: Batch) -> None:
    try:
        timestamp, visitorid, event, itemid, transactionid = decode_fields(value)
    except MessageError as exc:
        batch.rejects.append((partition, offset, value, str(exc)))
        return
    batch.events.append((timestamp, visitorid, event, itemid, transactionid, produced_ms, partition, offset))


def read_ranges(
    consumer: confluent_kafka.Consumer,
    topic: str,
    ranges: Sequence[OffsetRange],
    batch_size: int = DEFAULT_BATCH_SIZE,
    stall_timeout_s: float = 60.0,
) -> Iterator[Batch]:
    """Yield parsed batches covering exactly `ranges` (each message once, in offset order per partition)."""
    todo = {r.partition: r for r in ranges if r.size > 0}
    if not todo:
        return
    consumer.assign([confluent_kafka.TopicPartition(topic, p, r.start) for p, r in todo.items()])
    next_offset = {p: r.start for p, r in todo.items()}
    batch = Batch(topic)
    last_progress = time.monotonic()
    while todo:
        # Ask for no more than is still expected: consume() returns as soon as it has that many, instead of
        # waiting out its timeout for a chunk a small range can never fill (a second per call, per run).
        remaining = sum(r.end - next_offset[p] for p, r in todo.items())
        messages = consumer.consume(num_messages=max(1, min(CONSUME_CHUNK, remaining)), timeout=1.0)
        if not messages:
            if time.monotonic() - last_progress > stall_timeout_s:
                missing = {p: (next_offset[p], r.end) for p, r in todo.items()}
                raise RangeReadError(
                    f"no messages from {topic} for {stall_timeout_s:.0f} s while offsets {missing} "
                    "(partition: (next, end)) were still expected; are they deleted by retention?"
                )
            continue
        last_progress = time.monotonic()
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.code() == confluent_kafka.KafkaError._PARTITION_EOF:
                    continue
                raise RangeReadError(f"reading {topic}: {error.str()}")
            partition = msg.partition()
            offset = msg.offset()
            wanted = todo.get(partition)  # type: ignore[arg-type]
            if wanted is None or offset >= wanted.end or offset < next_offset[partition]:  # type: ignore[index,operator]
                continue  # a partition already done, past its range, or a repeated tail
            parse_record(partition, offset, msg.value(), msg.timestamp()[1], batch)  # type: ignore[arg-type]
            next_offset[partition] = offset + 1  # type: ignore[index,operator]
            if offset + 1 >= wanted.end:  # type: ignore[operator]
                del todo[partition]  # type: ignore[arg-type]
                consumer.pause([confluent_kafka.TopicPartition(topic, partition)])  # type: ignore[arg-type]
        if batch.size >= batch_size:
            yield batch
            batch = Batch(topic)
    if batch.size:
        yield batch


def lag_after(consumer: confluent_kafka.Consumer, topic: str, ranges: Sequence[OffsetRange]) -> int:
    """Messages in the topic's partitions beyond the ranges just read (what is still to be scheduled)."""
    lag = 0
    for r in ranges:
        _, high = consumer.get_watermark_offsets(
            confluent_kafka.TopicPartition(topic, r.partition), timeout=10
        )
        lag += max(0, int(high) - r.end)
    return lag


def _stage(
    cur: psycopg.Cursor, create: str, copy_sql: str, types: tuple[str, ...], rows: list[tuple[object, ...]]
) -> None:
    """COPY rows into a temp staging table (private to this transaction: no lock needed)."""
    cur.execute(create)
    with cur.copy(copy_sql) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


def load_batch(conn: psycopg.Connection, batch: Batch) -> LoadResult:
    """Insert one parsed batch; the caller's transaction makes it all-or-nothing."""
    result = LoadResult(messages=batch.size)
    with conn.cursor() as cur:
        if batch.events and distinct.sets_missing(cur):
            cur.execute(q.INGEST_LOCK)  # built once, before this batch's rows are in the table
            if distinct.sets_missing(cur):
                distinct.rebuild_sets(cur)
        copied: EventColumns | None = None
        if batch.events:
            copied = _copy_new(conn, cur, batch.topic, EventColumns.of(batch.events))
            result.inserted_by_partition = copied.per_partition()
            result.inserted = len(copied)
        if batch.rejects:
            _stage(
                cur,
                q.CREATE_QUARANTINE_STAGING,
                q.COPY_QUARANTINE_STAGING,
                q.QUARANTINE_STAGING_TYPES,
                batch.rejects,
            )
            cur.execute(q.INSERT_QUARANTINE_FROM_STAGING, {"topic": batch.topic})
            result.quarantined_by_partition = Counter(dict(cur.fetchall()))
            result.quarantined = sum(result.quarantined_by_partition.values())
            result.reasons.update(str(reject[3]).split(":", 1)[0] for reject in batch.rejects)
        if copied is not None and len(copied):
            cur.execute(q.INGEST_LOCK)
            distinct.add_events(cur, copied)
    return result


def _copy_new(
    conn: psycopg.Connection, cur: psycopg.Cursor, topic: str, events: EventColumns
) -> EventColumns:
    """COPY the events whose offsets are not stored yet into clickstream_events; returns those it copied.

    A batch normally holds only new offsets (one probe per partition says so); a re-run of stored offsets
    leaves them out. Should another loading transaction store some of the same offsets meanwhile (two runs of
    one range at once), the COPY waits for it, fails on the unique key and is rolled back to its savepoint;
    the offsets stored by then are left out and the rest copied again.
    """
    params = {"topic": topic, **_offset_bounds(events)}
    row = cur.execute(q.ANY_STORED, params).fetchone()
    check = bool(row and row[0])
    for _ in range(MAX_INSERT_ATTEMPTS):
        if check:
            events = events.without({(int(p), int(o)) for p, o in cur.execute(q.STORED_OFFSETS, params)})
        if not len(events):
            return events
        try:
            with conn.transaction(), cur.copy(q.COPY_EVENTS) as copy:  # a savepoint: only the COPY is undone
                copy.write(events.copy_data(topic))
            return events
        except psycopg.errors.UniqueViolation:
            check = True
    raise RuntimeError(
        f"other loading transactions kept storing these offsets; gave up after {MAX_INSERT_ATTEMPTS}"
    )


def _offset_bounds(events: EventColumns) -> dict[str, list[int]]:
    """The lowest and highest offset of the events in each partition (they are in source-key order)."""
    partitions, first = np.unique(events.partition, return_index=True)
    last = np.append(first[1:], len(events)) - 1
    return {
        "partitions": partitions.tolist(),
        "lows": events.offset[first].tolist(),
        "highs": events.offset[last].tolist(),
    }


def load_and_commit(conn: psycopg.Connection, batch: Batch) -> LoadResult:
    """`load_batch` in its own transaction."""
    with conn.transaction():
        return load_batch(conn, batch)


def ingest_ranges(
    consumer: confluent_kafka.Consumer,
    conn: psycopg.Connection,
    topic: str,
    ranges: Sequence[OffsetRange],
    run_id: str | None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> LoadResult:
    """Read `ranges` and load them batch by batch (one transaction each), then record them in the ledger.

    `inserted` counts rows new to the table: a re-run of a loaded range inserts 0 and quarantines 0.
    """
    total = LoadResult()
    # One batch loads (in PostgreSQL, on a worker thread) while the next one is read and decoded (here):
    # decoding is Python work, loading mostly waits on the server, so the two overlap. At most two batches
    # are in memory; the connection is only used by the worker until the loads are done.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="load-batch") as loader:
        loading: Future[LoadResult] | None = None
        for batch in read_ranges(consumer, topic, ranges, batch_size=batch_size):
            if loading is not None:
                total.add(loading.result())
            loading = loader.submit(load_and_commit, conn, batch)
        if loading is not None:
            total.add(loading.result())
    expected = sum(r.size for r in ranges)
    if total.messages != expected:
        raise RangeReadError(f"read {total.messages} messages from {topic}, expected {expected} for {ranges}")
    with conn.transaction():
        for r in ranges:
            conn.execute(
                q.RECORD_INGESTED_RANGE,
                (
                    topic,
                    r.partition,
                    r.start,
                    r.end,
                    r.size,
                    total.inserted_by_partition[r.partition],
                    total.quarantined_by_partition[r.partition],
                    run_id,
                ),
            )
    return total
