"""Reading exact Kafka offset ranges and loading them into PostgreSQL, effectively once.

`read_ranges` assigns exact offsets (no consumer group, no commits) with librdkafka and stops at each range's
end offset, so the same range always yields the same messages. `load_batch` COPYs them into temp staging
tables, drops the ones already stored (source coordinates), and inserts the rest in one transaction together
with the quarantine rows, the batch's window deltas, the per event type totals and the range ledger: a run
killed anywhere leaves either all of a batch or none of it, and re-running any range never duplicates.

What a batch adds to the distinct counts is found one of two ways, whichever reads less: a small batch (a
steady stream) probes the indexes of clickstream_events once per new pair; a batch that is large next to the
table (catching up on a backlog) merges with one ordered pass over those indexes. Both give the same exact
numbers; tests load the same events either way and compare with a plain SQL recomputation.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Literal

import confluent_kafka
import psycopg

from clickstream_dagster.messages import MessageError, decode_fields
from clickstream_dagster.sql import queries as q

# Messages per consume() call: large enough to amortise the call, small enough to yield batches on time.
CONSUME_CHUNK = 10_000

# When a batch's distinct counts come from a pass over the stored rows rather than from probes: while the
# table holds fewer than this many rows per event of the batch. A probe costs 30-45 us per event of the batch
# at 2.7M stored rows, the window pass 0.65 us per stored row; the visitor probes 7 us, their recount 0.4 us
# (measured on the 2-core machines here; the constants in queries.py say what each pass reads).
WINDOW_SCAN_ROWS_PER_EVENT = 40
TOTALS_SCAN_ROWS_PER_EVENT = 15

Strategy = Literal["auto", "probe", "scan"]

# Messages per loading transaction (raw_events' default too): a whole catching-up run, since a batch counted by a
# pass costs its insert plus one read of the table (bench/README.md, sixth round).
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
    scanned_batches: int = 0  # batches whose deltas came from a pass over the stored rows (not probes)
    reasons: Counter[str] = field(default_factory=Counter)
    inserted_by_partition: Counter[int] = field(default_factory=Counter)
    quarantined_by_partition: Counter[int] = field(default_factory=Counter)

    def add(self, other: LoadResult) -> None:
        self.messages += other.messages
        self.inserted += other.inserted
        self.quarantined += other.quarantined
        self.scanned_batches += other.scanned_batches
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


def load_batch(conn: psycopg.Connection, batch: Batch, strategy: Strategy = "auto") -> LoadResult:
    """Insert one parsed batch; the caller's transaction makes it all-or-nothing.

    `strategy` says how the batch's new distinct pairs are found ("auto": by the table's size next to the
    batch's; "probe" and "scan" force one way, for tests and benchmarks).
    """
    result = LoadResult(messages=batch.size)
    params = {"topic": batch.topic}
    with conn.cursor() as cur:
        if batch.events:
            _stage(cur, q.CREATE_EVENT_STAGING, q.COPY_EVENT_STAGING, q.EVENT_STAGING_TYPES, batch.events)
        if batch.rejects:
            _stage(
                cur,
                q.CREATE_QUARANTINE_STAGING,
                q.COPY_QUARANTINE_STAGING,
                q.QUARANTINE_STAGING_TYPES,
                batch.rejects,
            )
        cur.execute(q.INGEST_LOCK)
        if batch.events:
            stored = cur.execute(q.STAGED_ALREADY_STORED, {**params, **_offset_bounds(batch)}).fetchone()
            if stored and stored[0]:
                cur.execute(q.DROP_STAGED_ALREADY_STORED, params)
            scan_windows, scan_totals = _scans(cur, len(batch.events), strategy)
            if scan_windows or scan_totals:
                cur.execute(q.PREFER_INDEX_PASSES)
                result.scanned_batches = 1
            # Deltas (and probed totals) first: they compare the batch with the rows stored before it.
            cur.execute(q.QUEUE_WINDOW_DELTAS_BY_SCAN if scan_windows else q.QUEUE_WINDOW_DELTAS)
            if not scan_totals:
                cur.execute(q.ADD_EVENT_TOTALS)
            cur.execute(q.INSERT_EVENTS_FROM_STAGING, params)
            result.inserted_by_partition = Counter(dict(cur.fetchall()))
            result.inserted = sum(result.inserted_by_partition.values())
            if scan_totals:
                cur.execute(q.ADD_EVENT_TOTALS_BY_SCAN)  # recounts the table with the batch in it
        if batch.rejects:
            cur.execute(q.INSERT_QUARANTINE_FROM_STAGING, params)
            result.quarantined_by_partition = Counter(dict(cur.fetchall()))
            result.quarantined = sum(result.quarantined_by_partition.values())
            result.reasons.update(str(reject[3]).split(":", 1)[0] for reject in batch.rejects)
    return result


def _offset_bounds(batch: Batch) -> dict[str, list[int]]:
    """The lowest and highest offset of the batch's events in each partition: its first and last one, since
    a batch holds each partition's messages in offset order (as `read_ranges` yields them). Were that ever not
    so, a stored offset missed here would still be refused by the table's unique key, loudly."""
    partitions = list(map(itemgetter(6), batch.events))
    offsets = list(map(itemgetter(7), batch.events))
    last = dict(zip(partitions, offsets, strict=True))
    first = dict(zip(reversed(partitions), reversed(offsets), strict=True))
    return {
        "partitions": list(last),
        "lows": [first[p] for p in last],
        "highs": list(last.values()),
    }


def _scans(cur: psycopg.Cursor, events: int, strategy: Strategy) -> tuple[bool, bool]:
    """(window deltas by a pass?, event totals by a pass?) for a batch of this many events."""
    if strategy != "auto":
        return strategy == "scan", strategy == "scan"
    row = cur.execute(q.COUNT_EVENTS).fetchone()
    stored = int(row[0]) if row else 0
    return stored < WINDOW_SCAN_ROWS_PER_EVENT * events, stored < TOTALS_SCAN_ROWS_PER_EVENT * events


def load_and_commit(conn: psycopg.Connection, batch: Batch, strategy: Strategy = "auto") -> LoadResult:
    """`load_batch` in its own transaction; after a batch loaded by passes, VACUUM marks its pages
    all-visible so the next pass reads the indexes alone instead of fetching every new row from the heap."""
    with conn.transaction():
        result = load_batch(conn, batch, strategy)
    if result.scanned_batches:
        autocommit = conn.autocommit
        conn.autocommit = True  # VACUUM cannot run inside a transaction block
        try:
            conn.execute(q.VACUUM_EVENTS)
        finally:
            conn.autocommit = autocommit
    return result


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
