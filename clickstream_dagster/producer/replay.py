"""Replay events.csv into Kafka: rate limit, bounded in-flight window (backpressure), exact resume.

Delivery: acks=all with idempotence, so retries never duplicate and one partition keeps send order.
Backpressure: at most `max_in_flight_batches` x `batch_size` messages are unacknowledged; beyond that the
loop waits for the oldest acknowledgements, so a slow or absent broker slows the producer instead of filling
memory. Resume: every message carries its source fingerprint and line number in headers; `--resume` reads,
per partition, the last line a previous run got into the topic and skips exactly the lines at or before it
that hash to that partition (the same murmur2 partitioner Kafka uses). That is exact even after `kill -9`.
Speed: `KafkaProducer.send()` costs 20-40 µs of Python per record (argument checks, partitioner, a future per
record), which caps a producer near 30k messages/s. `BatchAppender` instead hands kafka-python's accumulator
whole chunks of pre-encoded records; its sender thread still does linger, idempotence (producer id and
sequence numbers are assigned when a batch is drained), retries and acknowledgements (see bench/README.md).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from kafka import TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2

from clickstream_dagster.clients.kafka import KafkaClient, KafkaUnavailable
from clickstream_dagster.data.readers import RowError, iter_event_rows, parse_event_row
from clickstream_dagster.messages import HEADER_LINE, HEADER_SOURCE, encode_key, encode_value
from clickstream_dagster.producer.batches import (
    BatchAppender,
    ProducerBatch,
    delivery_error,
    headers_prefix,
    record_tail,
)
from clickstream_dagster.producer.metrics import ProducerMetrics
from clickstream_dagster.producer.ratelimit import TimelinePacer, TokenBucket

log = logging.getLogger("clickstream.producer")

LATENCY_SAMPLE_EVERY = 64  # one acknowledgement latency per this many hand-overs to the accumulator
WAIT_LOG_SECONDS = 5.0
LOG_OVERHEAD = 12  # offset and size in front of a record batch, counted by max.message.bytes
HAND_OVER_RECORDS = 1_000  # unthrottled, records are handed to the accumulator in groups of about this many
# Throttled, records are handed over in groups of this long at the rate (10 ms: 20 records at 2,000/s). One
# record at a time cost 150-190 us of CPU per record at 2,000/s (a sleep and a hand-over each), CPU that the
# pipeline it feeds needs on a small machine; the pace stays steady to within one group.
THROTTLED_GROUP_S = 0.01


@dataclass(frozen=True)
class ReplayOptions:
    path: Path
    topic: str
    messages_per_second: float = 0.0  # 0 = unlimited
    batch_size: int = 5_000
    limit: int | None = None
    speedup: float | None = None
    resume: bool = False
    partitions: int = 3
    rejects_path: Path | None = None
    max_in_flight_batches: int = 8
    linger_ms: int = 100  # fewer, larger requests: less CPU in the sender thread and the broker
    kafka_batch_bytes: int = 1024 * 1024
    compression: str | None = None


@dataclass
class ReplaySummary:
    read: int = 0
    sent: int = 0
    rejected: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    rejects_path: Path | None = None
    reasons: Counter[str] = field(default_factory=Counter)
    first_error: str | None = None

    @property
    def reconciles(self) -> bool:
        return self.read == self.sent + self.rejected + self.skipped + self.failed

    def lines(self) -> list[str]:
        rate = self.sent / self.seconds if self.seconds > 0 else 0.0
        out = [
            f"read {self.read:,} rows = sent {self.sent:,} + rejected {self.rejected:,}"
            + (f" + already in topic {self.skipped:,}" if self.skipped else "")
            + (f" + failed {self.failed:,}" if self.failed else "")
            + ("" if self.reconciles else "  (DOES NOT RECONCILE)"),
            f"{self.seconds:.1f} s, {rate:,.0f} messages/s",
        ]
        if self.rejected:
            out.append(f"rejected rows with reasons: {self.rejects_path}")
            out.extend(f"  {n:,} x {reason}" for reason, n in self.reasons.most_common(10))
        if self.failed:
            out.append(f"first delivery error: {self.first_error}; re-run with --resume to send the rest")
        if self.interrupted:
            out.append("interrupted: re-run with --resume to continue without duplicates")
        return out


def source_fingerprint(path: Path) -> str:
    """Identifies a source file across runs: resolved path, size and the first MiB of content."""
    digest = hashlib.sha1(str(path.resolve()).encode())
    digest.update(str(path.stat().st_size).encode())
    with path.open("rb") as f:
        digest.update(f.read(1 << 20))
    return digest.hexdigest()[:16]


def count_data_rows(path: Path) -> int:
    with path.open("rb") as f:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 22), b""))
    return max(0, lines - 1)


def partition_for(key: bytes, partitions: int) -> int:
    """Index of the partition Kafka's default partitioner picks for `key` (murmur2, as in the Java client)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


_M = np.uint32(0x5BD1E995)


def partitions_for_keys(keys: Sequence[bytes], partitions: int) -> list[int]:
    """`partition_for` of many keys at once: murmur2 over numpy columns, about 0.3 µs a key instead of 2."""
    n = len(keys)
    if n == 0:
        return []
    sizes = list(map(len, keys))
    width = (max(sizes) + 4) & ~3  # whole 4-byte blocks, plus one (zero padded) for the tail
    lengths = np.array(sizes, dtype=np.int64)
    padded = b"".join([key.ljust(width, b"\0") for key in keys])
    blocks = np.frombuffer(padded, dtype="<u4").reshape(n, width // 4)
    whole = lengths // 4
    has_tail = (lengths & 3) > 0
    h = np.uint32(0x9747B28C) ^ lengths.astype(np.uint32)
    for j in range(width // 4):
        k = blocks[:, j]
        mixed = k * _M
        mixed ^= mixed >> np.uint32(24)
        mixed *= _M
        h = np.where(whole > j, (h * _M) ^ mixed, np.where((whole == j) & has_tail, (h ^ k) * _M, h))
    h ^= h >> np.uint32(13)
    h *= _M
    h ^= h >> np.uint32(15)
    indexes: list[int] = ((h & np.uint32(0x7FFFFFFF)) % np.uint32(partitions)).tolist()
    return indexes


def max_message_bytes(kafka: KafkaClient, topic: str) -> int | None:
    """The largest record batch the broker accepts for `topic` (max.message.bytes); None if unreadable."""
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, ["max.message.bytes"])
    try:
        with kafka.admin() as admin:
            described = admin.describe_configs([resource], config_filter="all")
        return int(described["topic"][topic]["max.message.bytes"]["value"])
    except (KafkaError, KafkaUnavailable, KeyError, TypeError, ValueError) as exc:
        log.warning("could not read max.message.bytes of %s (%s): batches may be refused", topic, exc)
        return None


def resume_points(kafka: KafkaClient, topic: str, fingerprint: str, chunk: int = 20_000) -> dict[int, int]:
    """Per partition, the highest source line of `fingerprint` already in the topic (scanning backwards)."""
    points: dict[int, int] = {}
    with kafka.consumer() as consumer:
        partitions = sorted(consumer.partitions_for_topic(topic) or [])
        for p in partitions:
            tp = TopicPartition(topic, p)
            start = consumer.beginning_offsets([tp])[tp]
            end = consumer.end_offsets([tp])[tp]
            upper = end
            while upper > start and p not in points:
                lower = max(start, upper - chunk)
                consumer.assign([tp])
                consumer.seek(tp, lower)
                best: int | None = None
                position = lower
                while position < upper:
                    records = consumer.poll(timeout_ms=5000).get(tp, [])
                    if not records:
                        break
                    for record in records:
                        if record.offset >= upper:
                            break
                        headers = dict(record.headers or [])
                        if headers.get(HEADER_SOURCE) == fingerprint.encode():
                            best = int(headers[HEADER_LINE])
                    position = records[-1].offset + 1
                if best is not None:
                    points[p] = best
                upper = lower
    return points


class _Progress:
    """tqdm on a terminal, a plain log line every few seconds otherwise."""

    def __init__(self, total: int | None, enabled: bool) -> None:
        self.total = total
        self.bar: Any = None
        self._last_log = time.monotonic()
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="msg", unit_scale=True, dynamic_ncols=True, desc="produce")
        self.enabled = enabled

    def update(self, n: int, summary: ReplaySummary, in_flight: int) -> None:
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if self.enabled and now - self._last_log >= 5.0:
            self._last_log = now
            total = f"/{self.total:,}" if self.total else ""
            log.info(
                "read %s%s, sent %s, rejected %s, in flight %s",
                f"{summary.read:,}",
                total,
                f"{summary.sent:,}",
                f"{summary.rejected:,}",
                f"{in_flight:,}",
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Replayer:
    def __init__(
        self,
        kafka: KafkaClient,
        options: ReplayOptions,
        metrics: ProducerMetrics | None = None,
        progress: bool = True,
    ) -> None:
        self.kafka = kafka
        self.opt = options
        self.metrics = metrics or ProducerMetrics()
        self.progress_enabled = progress
        self.summary = ReplaySummary()
        self._pending: deque[tuple[ProducerBatch, int]] = deque()  # (batch, our records in it), oldest first
        self._in_flight = 0
        self._handed_over = 0
        self._window_started = time.monotonic()
        self._window_sent = 0
        self._rejects_file: IO[str] | None = None
        self._rejects_writer: Any = None

    # ---- delivery bookkeeping ---------------------------------------------------------------------
    def _hand_over(self, appender: BatchAppender, keys: list[bytes], tails: list[bytes]) -> None:
        """Give the staged records to the producer, partitioned like Kafka's default partitioner."""
        n_partitions = len(appender.partitions)
        if len(keys) >= 32:
            indexes = partitions_for_keys(keys, n_partitions)
        else:
            indexes = [partition_for(key, n_partitions) for key in keys]
        groups: list[list[bytes]] = [[] for _ in range(n_partitions)]
        for index, tail in zip(indexes, tails, strict=True):
            groups[index].append(tail)
        observe: Callable[[float], None] = self.metrics.latency.observe
        for index, group in enumerate(groups):
            if not group:
                continue
            for batch, count in appender.append(index, group):
                self._pending.append((batch, count))
                self._in_flight += count
                self._handed_over += 1
                if self._handed_over % LATENCY_SAMPLE_EVERY == 1:
                    handed_at = time.perf_counter()
                    batch.produce_future.add_callback(
                        lambda _r, t=handed_at: observe(time.perf_counter() - t)
                    )
        self.metrics.buffer_depth.set(self._in_flight)

    def _settle_oldest(self, appender: BatchAppender) -> None:
        batch, count = self._pending.popleft()
        waited = 0.0
        while not batch.produce_future.wait(WAIT_LOG_SECONDS):
            waited += WAIT_LOG_SECONDS
            if appender.orphaned(batch):
                raise RuntimeError(
                    f"Kafka at {self.kafka.bootstrap_servers} refused a batch of {batch.records.size_in_bytes():,}"
                    " bytes as too large: lower kafka_batch_bytes below the topic's max.message.bytes and re-run"
                    " with --resume (nothing is sent twice)"
                )
            log.warning(
                "broker slow or unreachable at %s: waited %.0f s for acknowledgements (%s in flight); "
                "retrying, nothing is dropped",
                self.kafka.bootstrap_servers,
                waited,
                f"{self._in_flight:,}",
            )
        error = delivery_error(batch)
        if error is None:
            self.summary.sent += count
            self._window_sent += count
            self.metrics.sent.inc(count)
        else:
            self.summary.failed += count
            self.metrics.failed.inc(count)
            if self.summary.first_error is None:
                self.summary.first_error = repr(error)
        self._in_flight -= count
        self.metrics.buffer_depth.set(self._in_flight)
        now = time.monotonic()
        if now - self._window_started >= 1.0:
            self.metrics.rate.set(self._window_sent / (now - self._window_started))
            self._window_started, self._window_sent = now, 0

    def _settle_all(self, appender: BatchAppender) -> None:
        while self._pending:
            self._settle_oldest(appender)

    def _reject(self, line_no: int, fields: list[str], exc: RowError, rejects_path: Path) -> None:
        if self._rejects_writer is None:
            rejects_path.parent.mkdir(parents=True, exist_ok=True)
            self._rejects_file = rejects_path.open("w", newline="")
            self._rejects_writer = csv.writer(self._rejects_file)
            self._rejects_writer.writerow(["line", "reason", "raw"])
        reason = str(exc)
        self._rejects_writer.writerow([line_no, reason, ",".join(fields)])
        self.summary.rejected += 1
        self.summary.reasons[reason] += 1
        self.metrics.rejected.labels(reason=exc.kind).inc()

    def _producer_settings(self) -> dict[str, Any]:
        opt = self.opt
        # A batch the broker refuses as too large would be split by kafka-python behind the appender's back.
        batch_bytes = opt.kafka_batch_bytes
        limit_bytes = max_message_bytes(self.kafka, opt.topic)
        if limit_bytes is not None and batch_bytes > limit_bytes - LOG_OVERHEAD:
            batch_bytes = limit_bytes - LOG_OVERHEAD
            log.info("batches capped at %s bytes: the max.message.bytes of %s", f"{batch_bytes:,}", opt.topic)
        return {
            "linger_ms": opt.linger_ms,
            "batch_size": batch_bytes,
            "compression_type": opt.compression,
            "max_block_ms": 10 * 60 * 1000,
            "delivery_timeout_ms": 10 * 60 * 1000,
            "request_timeout_ms": 30_000,
        }

    # ---- main loop ----------------------------------------------------------------------------------
    def run(self) -> ReplaySummary:
        opt = self.opt
        started = time.monotonic()
        fingerprint = source_fingerprint(opt.path)
        self.kafka.ensure_topic(opt.topic, partitions=opt.partitions)
        skip_points: dict[int, int] = {}
        if opt.resume:
            skip_points = resume_points(self.kafka, opt.topic, fingerprint)
            if skip_points:
                log.info("resuming after lines already in the topic, per partition: %s", skip_points)
        total = opt.limit if opt.limit is not None else count_data_rows(opt.path)
        bucket = TokenBucket(opt.messages_per_second) if opt.messages_per_second > 0 else None
        pacer = TimelinePacer(opt.speedup) if opt.speedup else None
        # Paced by event time, each record is handed over at once, so its CreateTime is when the pace let it
        # go; at a fixed rate, in groups the bucket lets go together (CreateTime is when the group went).
        if pacer is not None:
            group_size = 1
        elif bucket is not None:
            group_size = max(1, min(opt.batch_size, int(opt.messages_per_second * THROTTLED_GROUP_S)))
        else:
            group_size = min(HAND_OVER_RECORDS, opt.batch_size)
        max_in_flight = opt.max_in_flight_batches * opt.batch_size
        rejects_path = opt.rejects_path or opt.path.with_name(f"{opt.path.stem}.{opt.topic}.rejects.csv")
        self.summary.rejects_path = rejects_path
        progress = _Progress(total, self.progress_enabled)
        prefix = headers_prefix(fingerprint.encode())
        try:
            with self.kafka.producer(**self._producer_settings()) as producer:
                appender = BatchAppender(producer, opt.topic)
                partitions = appender.partitions
                keys: list[bytes] = []
                tails: list[bytes] = []
                summary = self.summary
                limit = opt.limit
                try:
                    for line_no, fields in iter_event_rows(opt.path):
                        if limit is not None and summary.sent + self._in_flight + len(tails) >= limit:
                            break
                        summary.read += 1
                        try:
                            ev = parse_event_row(fields)
                        except RowError as exc:
                            self._reject(line_no, fields, exc, rejects_path)
                            continue
                        key = encode_key(ev.visitorid)
                        if skip_points and line_no <= skip_points.get(
                            partitions[partition_for(key, len(partitions))], -1
                        ):
                            summary.skipped += 1
                            continue
                        if bucket is not None and not tails:
                            bucket.acquire(group_size)  # the tokens of the group this record starts
                        if pacer is not None:
                            pacer.wait_for(ev.timestamp)
                        value = encode_value(
                            ev.timestamp, ev.visitorid, ev.event, ev.itemid, ev.transactionid
                        )
                        keys.append(key)
                        tails.append(record_tail(key, value, prefix, b"%d" % line_no))
                        if len(tails) >= group_size:
                            # Fresh lists first, so records handed over before an interrupt are not sent again.
                            group_keys, group_tails, keys, tails = keys, tails, [], []
                            self._hand_over(appender, group_keys, group_tails)
                            progress.update(len(group_tails), summary, self._in_flight)
                            while self._in_flight > max_in_flight:
                                self._settle_oldest(appender)
                            # Batches already acknowledged are counted now, not when backpressure or the
                            # end reaches them: the sent counter (/metrics) follows the acknowledgements.
                            while self._pending and self._pending[0][0].produce_future.is_done:
                                self._settle_oldest(appender)
                            if summary.failed:
                                break
                except KeyboardInterrupt:
                    self.summary.interrupted = True
                    log.warning("interrupted: flushing what was already read")
                if tails:
                    self._hand_over(appender, keys, tails)
                    progress.update(len(tails), summary, self._in_flight)
                self._settle_all(appender)  # before flush(), which would wait forever on a split batch
                producer.flush()
        finally:
            progress.close()
            if self._rejects_file is not None:
                self._rejects_file.close()
            self.metrics.read.inc(self.summary.read)
            self.summary.seconds = time.monotonic() - started
        return self.summary
