"""Kafka record batches built by hand: records encoded once (format v2) and appended to kafka-python's own
producer batches, many at a time (`BatchAppender`).

It uses kafka-python's internals (its accumulator, `ProducerBatch`, `MemoryRecordsBuilder` and varint
encoding) through `clients.kafka_internals`, the one door to them, which checks the library's version.
"""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaProducer, TopicPartition

from clickstream_dagster.clients.kafka_internals import (
    INSTALLED_KAFKA_PYTHON,
    MemoryRecordsBuilder,
    ProducerBatch,
    encode_varint,
    supported,
)
from clickstream_dagster.messages import HEADER_LINE, HEADER_SOURCE

__all__ = ["BatchAppender", "ProducerBatch", "delivery_error", "headers_prefix", "record_tail", "varint"]


def _zigzag_varint(value: int) -> bytes:
    out = bytearray()
    encode_varint(value, out.append)
    return bytes(out)


# Zigzag doubles a non-negative value: below 64 it is one byte, below 8192 two.
_SMALL_VARINTS = [bytes([2 * i]) for i in range(64)] + [
    bytes([0x80 | (2 * i & 0x7F), 2 * i >> 7]) for i in range(64, 1 << 13)
]


def varint(value: int) -> bytes:
    """A zigzag varint, as record fields are written."""
    return _SMALL_VARINTS[value] if 0 <= value < 1 << 13 else _zigzag_varint(value)


def headers_prefix(fingerprint: bytes) -> bytes:
    """The record's header section up to the line number's value: the count, `src` whole, `line`'s key."""
    src, line = HEADER_SOURCE.encode(), HEADER_LINE.encode()
    return b"".join(
        [varint(2), varint(len(src)), src, varint(len(fingerprint)), fingerprint, varint(len(line)), line]
    )


def record_tail(
    key: bytes, value: bytes, prefix: bytes, line: bytes, small: list[bytes] = _SMALL_VARINTS
) -> bytes:
    """A record from its key on: the part that does not depend on its place in a batch.

    Key, value and line number are each under 8 KiB, as event messages are (about 110 bytes).
    """
    return b"%s%s%s%s%s%s%s" % (
        small[len(key)],
        key,
        small[len(value)],
        value,
        prefix,
        small[len(line)],
        line,
    )


class BatchAppender:
    """Appends encoded records to kafka-python's producer batches, a group per partition lock.

    This does what `KafkaProducer.send()` does for one record, for many at once and without a future per
    record: it fills the open `ProducerBatch` of the partition (or opens one) in kafka-python's
    `RecordAccumulator`, and wakes the sender when a batch is new or full. Everything after that is
    kafka-python's own: linger, the producer id and sequence numbers set when a batch is drained
    (idempotence), retries, expiry and acknowledgements. A caller learns each batch's outcome from
    `ProducerBatch.produce_future` (see `delivery_error`).

    It relies on internals of kafka-python 3.0 (`clients.kafka_internals` checks the version; the
    accumulator's shape is checked when constructed), so kafka-python stays pinned.
    """

    def __init__(self, producer: KafkaProducer, topic: str) -> None:
        accumulator: Any = getattr(producer, "_accumulator", None)
        usable = (
            supported()
            and accumulator is not None
            and all(hasattr(accumulator, a) for a in ("_batches", "_tp_lock", "_incomplete", "_closed"))
            and accumulator.config.get("message_version") == 2
            and not producer.config.get("transactional_id")
        )
        if not usable:
            raise RuntimeError(
                f"the producer's BatchAppender needs kafka-python 3.0.x (found {INSTALLED_KAFKA_PYTHON}), message "
                "format v2 (Kafka >= 0.11) and no transactions: install kafka-python==3.0.12 as pinned in "
                "pyproject.toml"
            )
        self._accumulator: Any = accumulator
        self._wakeup = producer._sender.wakeup
        config = accumulator.config
        self._format = (config["message_version"], config["compression_attrs"], config["batch_size"])
        self.partitions: list[int] = sorted(producer.partitions_for(topic))
        self._tps = [TopicPartition(topic, p) for p in self.partitions]

    def append(self, index: int, tails: list[bytes]) -> list[tuple[ProducerBatch, int]]:
        """Append records (`record_tail`s, in order) to partition `partitions[index]`.

        Returns the batches they went into, each with how many of them it took.
        """
        acc = self._accumulator
        tp = self._tps[index]
        now = time.monotonic()
        timestamp = int(time.time() * 1000)  # CreateTime, as send() sets it
        placed: list[tuple[ProducerBatch, int]] = []
        wake = False
        start = 0
        while start < len(tails):
            with acc._tp_lock(tp):
                if acc._closed:
                    raise RuntimeError("the Kafka producer was closed while records were being appended")
                dq = acc._batches[tp]
                taken = self._fill(dq[-1], tails, start, timestamp, now) if dq else 0
                if taken:
                    batch = dq[-1]
                    wake = wake or len(dq) > 1 or batch.records.is_full()
                else:
                    batch = ProducerBatch(tp, MemoryRecordsBuilder(*self._format), now=now)
                    taken = self._fill(batch, tails, start, timestamp, now)
                    dq.append(batch)
                    acc._incomplete.add(batch)
                    wake = True
            placed.append((batch, taken))
            start += taken
        if wake:
            self._wakeup()
        return placed

    @staticmethod
    def _fill(batch: ProducerBatch, tails: list[bytes], start: int, timestamp: int, now: float) -> int:
        """Append tails[start:] while they fit (the first record of a batch always does); returns the count."""
        records = batch.records
        if records._closed:  # drained, or re-queued for a retry
            return 0
        builder = records._builder
        if builder._first_timestamp is None:
            builder._first_timestamp = builder._max_timestamp = timestamp
        head = b"\x00" + varint(timestamp - builder._first_timestamp)  # attributes, timestamp delta
        room = builder._batch_size - len(builder._buffer)
        first = offset = records._next_offset
        out: list[bytes] = []
        for i in range(start, len(tails)):
            tail = tails[i]
            offset_delta = varint(offset)
            size = len(head) + len(offset_delta) + len(tail)
            record = varint(size) + head + offset_delta + tail
            room -= len(record)
            if room < 0 and offset > 0:
                break
            out.append(record)
            offset += 1
        taken = offset - first
        if taken:
            builder._buffer += b"".join(out)
            builder._num_records += taken
            builder._last_offset = offset - 1
            builder._max_timestamp = max(builder._max_timestamp, timestamp)
            records._next_offset = offset
            batch.last_append = now
            batch.max_record_size = max(batch.max_record_size, *map(len, out))
        return taken

    def orphaned(self, batch: ProducerBatch) -> bool:
        """True if kafka-python dropped `batch` without completing it.

        That happens only when the broker refuses it as too large and the client splits it: the records go
        on in new batches this caller does not know about.
        """
        return not batch.produce_future.is_done and batch not in self._accumulator._incomplete.all()


def delivery_error(batch: ProducerBatch) -> BaseException | None:
    """None if the broker acknowledged the completed `batch`, else why not."""
    future = batch.produce_future
    if future.failed():
        return future.exception
    _base_offset, _log_append_time, record_errors = future.value
    return None if record_errors is None else record_errors(0)
