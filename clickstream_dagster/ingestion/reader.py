"""Reading exact Kafka offset ranges under read_committed, each offset accounted for.

`RangeReader` assigns exact offsets (no consumer group, no commits) with librdkafka and finishes each range by
the consumer's position, so the same range always yields the same messages, and offsets that carry no message
(transaction markers, aborted transactions, compaction, retention) never stall it; each of those offsets is
accounted for by its cause (`kafka_log`). Messages are decoded as they arrive (`messages.decode_fields`) into
batches: valid events for clickstream_events, invalid ones as quarantine rows with the reason and their source
coordinates.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import confluent_kafka

from clickstream_dagster.events import ParsedEvent
from clickstream_dagster.ingestion.ranges import OffsetRange
from clickstream_dagster.messages import MAX_MESSAGE_BYTES, MessageError, decode_fields

# What the quarantine keeps of an oversized payload (beside its size and sha256).
QUARANTINE_PREFIX_BYTES = 1024

# Messages per consume() call: large enough to amortise the call, small enough to yield batches on time.
CONSUME_CHUNK = 10_000

# Messages per loading transaction (raw_events' default too): a whole catching-up run; a steady stream's runs
# are far smaller.
DEFAULT_BATCH_SIZE = 500_000


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
        log why (`kafka_log`), and check that the log agrees with what was received."""
        gapped = [rr for rr in self.ranges.values() if rr.done and rr.failure is None and rr.unaccounted]
        if not gapped:
            return
        from clickstream_dagster.ingestion.kafka_log import KafkaLogError, classify_offsets

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
