"""Reading exact Kafka offset ranges and loading them into PostgreSQL, effectively once.

`RangeReader` assigns exact offsets (no consumer group, no commits) with librdkafka under read_committed and
finishes each range by the consumer's position, so the same range always yields the same messages, and
offsets that carry no message (transaction markers, aborted transactions, compaction, retention) never stall
it; each of those offsets is accounted for by its cause (`pipeline.kafka_log`). `load_batch` COPYs the events
whose source coordinates are not stored yet straight into clickstream_events (`pipeline.columns`), in one
transaction together with the quarantine rows, the batch's window deltas and the per event type totals; the
range ledger follows once every batch of the ranges is in, one row per range read in full. A run killed
anywhere leaves either all of a batch or none of it, and re-running any range never duplicates.

The COPY runs outside any lock, so the batches of concurrent runs insert in parallel. Only then does a
transaction take the ingest lock, to add the events it inserted to the distinct sets (`analytics.distinct`):
one batch at a time, each counted against every batch committed before it.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import confluent_kafka
import numpy as np
import psycopg

from clickstream_dagster.analytics import distinct
from clickstream_dagster.events import EventColumns, ParsedEvent
from clickstream_dagster.messages import MAX_MESSAGE_BYTES, MessageError, decode_fields
from clickstream_dagster.pipeline.columns import copy_data
from clickstream_dagster.sql import queries as q
from clickstream_dagster.sql.copy import copy_rows

# What the quarantine keeps of an oversized payload (beside its size and sha256).
QUARANTINE_PREFIX_BYTES = 1024

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

    def as_dict(self) -> dict[str, int]:
        """{"partition", "start", "end"}: how a range appears in run config, metadata and query parameters."""
        return asdict(self)


@dataclass
class Batch:
    """Parsed messages of one read: good rows for clickstream_events, bad ones for the quarantine.

    events: valid messages, each partition's in offset order
    rejects: invalid ones, as quarantine rows
    """

    topic: str
    events: list[ParsedEvent] = field(default_factory=list)
    rejects: list[QuarantineRow] = field(default_factory=list)

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


class QuarantineRow(NamedTuple):
    """An invalid message as the quarantine keeps it (the order of queries.QUARANTINE_STAGING_TYPES)."""

    partition: int
    offset: int
    payload: bytes | None  # an oversized payload: only its first QUARANTINE_PREFIX_BYTES
    reason: str
    payload_bytes: int | None  # the original size
    payload_sha256: bytes | None  # of the original payload
    truncated: bool


def quarantine_row(partition: int, offset: int, value: bytes | None, reason: str) -> QuarantineRow:
    """A row for the quarantine: an oversized payload keeps only its first QUARANTINE_PREFIX_BYTES, and every
    payload its original size and sha256."""
    if value is None:
        return QuarantineRow(partition, offset, None, reason, None, None, False)
    truncated = len(value) > MAX_MESSAGE_BYTES
    stored = value[:QUARANTINE_PREFIX_BYTES] if truncated else value
    return QuarantineRow(
        partition, offset, stored, reason, len(value), hashlib.sha256(value).digest(), truncated
    )


def parse_record(partition: int, offset: int, value: bytes | None, produced_ms: int, batch: Batch) -> None:
    try:
        timestamp, visitorid, event, itemid, transactionid = decode_fields(value)
    except MessageError as exc:
        batch.rejects.append(quarantine_row(partition, offset, value, str(exc)))
        return
    batch.events.append(
        ParsedEvent(timestamp, visitorid, event, itemid, transactionid, produced_ms, partition, offset)
    )


@dataclass
class RangeRead:
    """How one partition's range was read. Offsets are not dense: transaction markers, aborted transactions,
    compaction and retention all leave offsets that carry no message, so a range is finished by the
    consumer's position, never by counting messages. Once read (and `failure` is None):

        read + skipped_control + skipped_aborted + skipped_compacted + lost_retention = end - start
    """

    range: OffsetRange
    read: int = 0  # messages the consumer received (valid or not)
    lost_retention: int = 0  # offsets already deleted from the log (retention, DeleteRecords) when read
    skipped_control: int = 0
    skipped_aborted: int = 0
    skipped_compacted: int = 0
    next_offset: int = 0
    done: bool = False
    failure: str | None = None

    @property
    def skipped(self) -> int:
        return self.skipped_control + self.skipped_aborted + self.skipped_compacted

    @property
    def unaccounted(self) -> int:
        return self.range.size - self.read - self.lost_retention - self.skipped


class RangeReader:
    """Reads exact offset ranges (at most one per partition) under read_committed and accounts for every
    offset of them. A partition that cannot be read is marked failed and given up; the other partitions
    are read to the end all the same.

    `consumer` must be created with isolation.level=read_committed, enable.partition.eof=true and
    auto.offset.reset=error (KafkaClient.bulk_consumer).
    """

    def __init__(
        self,
        consumer: confluent_kafka.Consumer,
        topic: str,
        ranges: Sequence[OffsetRange],
        batch_size: int = DEFAULT_BATCH_SIZE,
        stall_timeout_s: float = 60.0,
    ) -> None:
        partitions = [r.partition for r in ranges]
        if len(set(partitions)) != len(partitions):
            raise ValueError(f"at most one range per partition in one read: {ranges}")
        self.consumer = consumer
        self.topic = topic
        self.batch_size = batch_size
        self.stall_timeout_s = stall_timeout_s
        self.ranges = {r.partition: RangeRead(r, next_offset=r.start) for r in ranges}

    def batches(self) -> Iterator[Batch]:
        """Yield parsed batches covering what the ranges hold (each message once, in offset order per
        partition); afterwards every range is done or failed, with its offsets accounted for."""
        todo = {p: r for p, r in self.ranges.items() if r.range.size > 0}
        for empty in self.ranges.values():
            if empty.range.size == 0:
                empty.done = True
        self._skip_deleted(todo)
        if not todo:
            return
        tp = confluent_kafka.TopicPartition
        self.consumer.assign([tp(self.topic, p, r.next_offset) for p, r in todo.items()])
        batch = Batch(self.topic)
        progress = {p: time.monotonic() for p in todo}
        while todo:
            # Ask for no more than the ranges can still hold: consume() returns as soon as it has that many,
            # instead of waiting out its timeout for a chunk a small range can never fill.
            remaining = sum(r.range.end - r.next_offset for r in todo.values())
            messages = self.consumer.consume(num_messages=max(1, min(CONSUME_CHUNK, remaining)), timeout=1.0)
            for msg in messages:
                partition: int = msg.partition()  # type: ignore[assignment]
                rr = todo.get(partition)
                error = msg.error()
                if error is not None:
                    self._on_error(error, msg, todo)
                    continue
                if rr is None:
                    continue  # a partition already done
                offset: int = msg.offset()  # type: ignore[assignment]
                if offset >= rr.range.end or offset < rr.next_offset:
                    if offset >= rr.range.end:
                        self._finish(rr, todo)
                    continue
                parse_record(partition, offset, msg.value(), msg.timestamp()[1], batch)
                rr.read += 1
                rr.next_offset = offset + 1
                progress[partition] = time.monotonic()
                if rr.next_offset >= rr.range.end:
                    self._finish(rr, todo)
            # The position moves past offsets that carry no message (markers, aborted records, compacted
            # holes) without delivering anything: that, not a count, says when a range is done.
            if todo:
                now = time.monotonic()
                for pos in self.consumer.position([tp(self.topic, p) for p in todo]):
                    waiting = todo.get(pos.partition)
                    if waiting is None:
                        continue
                    if pos.offset >= waiting.range.end:
                        self._finish(waiting, todo)
                    elif pos.offset > waiting.next_offset:
                        progress[pos.partition] = now
                    elif now - progress[pos.partition] > self.stall_timeout_s:
                        self._fail(
                            waiting,
                            todo,
                            f"no message for {self.stall_timeout_s:.0f} s at offset {waiting.next_offset} "
                            f"(position {pos.offset}, range end {waiting.range.end})",
                        )
            if batch.size >= self.batch_size:
                yield batch
                batch = Batch(self.topic)
        if batch.size:
            yield batch

    def _skip_deleted(self, todo: dict[int, RangeRead]) -> None:
        """Offsets below a partition's log start are gone (retention or DeleteRecords): count them as lost
        and start reading at the log start."""
        for p, rr in list(todo.items()):
            low, _high = watermarks(self.consumer, self.topic, p)
            if low > rr.next_offset:
                first = min(int(low), rr.range.end)
                rr.lost_retention += first - rr.next_offset
                rr.next_offset = first
                if first >= rr.range.end:
                    rr.done = True
                    del todo[p]

    def _on_error(
        self, error: confluent_kafka.KafkaError, msg: confluent_kafka.Message, todo: dict[int, RangeRead]
    ) -> None:
        partition = msg.partition()
        rr = todo.get(partition) if partition is not None and partition >= 0 else None
        if error.code() == confluent_kafka.KafkaError._PARTITION_EOF:
            if rr is not None and (msg.offset() or 0) >= rr.range.end:
                self._finish(rr, todo)
            return
        if rr is None:
            # Client-wide errors (a broker down, a connection lost) are retried by librdkafka itself; only a
            # fatal one ends the read.
            if error.fatal():
                raise RangeReadError(f"reading {self.topic}: {error.str()}")
            return
        # Offset out of range (the log start moved past the read position while reading), or any other
        # error of this partition alone: give it up; the other partitions go on. The gap it leaves is
        # requested again, and the next read counts what retention took as lost.
        self._fail(rr, todo, f"{error.name()}: {error.str()}")

    def _finish(self, rr: RangeRead, todo: dict[int, RangeRead]) -> None:
        rr.done = True
        self._stop(rr, todo)

    def _fail(self, rr: RangeRead, todo: dict[int, RangeRead], reason: str) -> None:
        rr.failure = reason
        self._stop(rr, todo)

    def _stop(self, rr: RangeRead, todo: dict[int, RangeRead]) -> None:
        todo.pop(rr.range.partition, None)
        self.consumer.pause([confluent_kafka.TopicPartition(self.topic, rr.range.partition)])

    def account_for_gaps(self) -> None:
        """For each range read in full that received fewer messages than it has offsets, find out from the
        log why (`pipeline.kafka_log`), and check that the log agrees with what was received."""
        gapped = [rr for rr in self.ranges.values() if rr.done and rr.failure is None and rr.unaccounted]
        if not gapped:
            return
        from clickstream_dagster.pipeline.kafka_log import KafkaLogError, classify_offsets

        metadata = self.consumer.list_topics(self.topic, timeout=10)
        partitions = metadata.topics[self.topic].partitions
        for rr in gapped:
            leader = metadata.brokers.get(partitions[rr.range.partition].leader)
            if leader is None:
                rr.failure = f"no leader for partition {rr.range.partition}"
                continue
            start = rr.range.start + rr.lost_retention
            try:
                kinds = classify_offsets(
                    leader.host, leader.port, self.topic, rr.range.partition, start, rr.range.end
                )
            except (KafkaLogError, OSError) as exc:
                rr.failure = f"could not tell why offsets carry no message: {exc}"
                continue
            if kinds.delivered != rr.read or kinds.undecided:
                rr.failure = (
                    f"the log holds {kinds.delivered} committed messages in [{start}, {rr.range.end}) and "
                    f"{kinds.undecided} of undecided transactions, but the consumer received {rr.read}"
                )
                continue
            rr.skipped_control = kinds.control
            rr.skipped_aborted = kinds.aborted
            rr.skipped_compacted = kinds.compacted


def watermarks(
    consumer: confluent_kafka.Consumer, topic: str, partition: int, timeout_s: float = 60.0
) -> tuple[int, int]:
    """(log start, last stable offset) of a partition. Asked again while the cluster cannot answer yet (a
    broker just restarted: "Unknown partition" until the client has fresh metadata), for up to `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = consumer.get_watermark_offsets(
                confluent_kafka.TopicPartition(topic, partition), timeout=10, cached=False
            )
            return int(low), int(high)
        except confluent_kafka.KafkaException as exc:
            error = exc.args[0] if exc.args else None
            fatal = isinstance(error, confluent_kafka.KafkaError) and error.fatal()
            if fatal or time.monotonic() > deadline:
                raise RangeReadError(f"offsets of {topic}/{partition} unavailable: {exc}") from exc
            time.sleep(1.0)


def lag_after(consumer: confluent_kafka.Consumer, topic: str, ranges: Sequence[OffsetRange]) -> int:
    """Offsets in the topic's partitions beyond the ranges just read, up to the last stable offset (what is
    still to be scheduled; an upper bound on its messages)."""
    lag = 0
    for r in ranges:
        _, high = watermarks(consumer, topic, r.partition)
        lag += max(0, high - r.end)
    return lag


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
            cur.execute(q.CREATE_QUARANTINE_STAGING)  # private to this transaction: no lock needed
            copy_rows(cur, q.COPY_QUARANTINE_STAGING, q.QUARANTINE_STAGING_TYPES, batch.rejects)
            cur.execute(q.INSERT_QUARANTINE_FROM_STAGING, {"topic": batch.topic})
            result.quarantined_by_partition = Counter(dict(cur.fetchall()))
            result.quarantined = sum(result.quarantined_by_partition.values())
            result.reasons.update(reject.reason.split(":", 1)[0] for reject in batch.rejects)
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
                copy.write(copy_data(events, topic))
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
    stall_timeout_s: float = 60.0,
) -> LoadResult:
    """Read `ranges` and load them batch by batch (one transaction each), then record each range read in
    full in the ledger, with every offset accounted for. A range that could not be read is left out of the
    ledger (a gap, which the contiguity check names and the sensor requests again) and RangeReadError is
    raised after the other ranges are recorded.

    `inserted` counts rows new to the table: a re-run of a loaded range inserts 0 and quarantines 0.
    """
    total = LoadResult()
    reader = RangeReader(consumer, topic, ranges, batch_size=batch_size, stall_timeout_s=stall_timeout_s)
    # One batch loads (in PostgreSQL, on a worker thread) while the next one is read and decoded (here):
    # decoding is Python work, loading mostly waits on the server, so the two overlap. At most two batches
    # are in memory; the connection is only used by the worker until the loads are done.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="load-batch") as loader:
        loading: Future[LoadResult] | None = None
        for batch in reader.batches():
            if loading is not None:
                total.add(loading.result())
            loading = loader.submit(load_and_commit, conn, batch)
        if loading is not None:
            total.add(loading.result())
    reader.account_for_gaps()
    read = [rr for rr in reader.ranges.values() if rr.failure is None]
    for rr in read:
        if rr.unaccounted:  # a bug, never a state to record
            rr.failure = f"{rr.unaccounted} offsets of {rr.range} not accounted for"
    with conn.transaction():
        for rr in reader.ranges.values():
            if rr.failure is None:
                _record_range(conn, topic, rr, total, run_id)
    failed = {p: rr.failure for p, rr in reader.ranges.items() if rr.failure}
    if failed:
        raise RangeReadError(
            f"could not read {topic} partitions {failed}; the other partitions' ranges are loaded and recorded"
        )
    return total


def _record_range(
    conn: psycopg.Connection, topic: str, rr: RangeRead, total: LoadResult, run_id: str | None
) -> None:
    r = rr.range
    conn.execute(
        q.RECORD_INGESTED_RANGE,
        {
            "topic": topic,
            **r.as_dict(),
            "read": rr.read,
            "inserted": total.inserted_by_partition[r.partition],
            "quarantined": total.quarantined_by_partition[r.partition],
            "control": rr.skipped_control,
            "aborted": rr.skipped_aborted,
            "compacted": rr.skipped_compacted,
            "lost": rr.lost_retention,
            "run_id": run_id,
        },
    )
