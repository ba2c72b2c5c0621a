"""Replay events.csv into Kafka: rate limit, bounded in-flight window (backpressure), exact resume.

Delivery: acks=all with idempotence, so retries never duplicate and one partition keeps send order.
Backpressure: at most `max_in_flight_batches` batches of `batch_size` messages are unacknowledged; beyond
that the loop waits for the oldest batch, so a slow or absent broker slows the producer instead of filling
memory. Resume: every message carries its source fingerprint and line number in headers; `--resume` reads,
per partition, the last line a previous run got into the topic and skips exactly the lines at or before it
that hash to that partition (the same murmur2 partitioner Kafka uses). That is exact even after `kill -9`.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError
from kafka.partitioner.default import murmur2
from kafka.producer.future import FutureRecordMetadata

from clickstream_dagster.data.readers import RowError, iter_event_rows, parse_event_row
from clickstream_dagster.messages import HEADER_LINE, HEADER_SOURCE, encode_key, encode_value
from clickstream_dagster.producer.metrics import ProducerMetrics
from clickstream_dagster.producer.ratelimit import TimelinePacer, TokenBucket
from clickstream_dagster.resources.kafka import KafkaResource

log = logging.getLogger("clickstream.producer")

LATENCY_SAMPLE_EVERY = 64
WAIT_LOG_SECONDS = 5.0


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
    max_in_flight_batches: int = 4
    linger_ms: int = 20
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
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def resume_points(kafka: KafkaResource, topic: str, fingerprint: str, chunk: int = 20_000) -> dict[int, int]:
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
        kafka: KafkaResource,
        options: ReplayOptions,
        metrics: ProducerMetrics | None = None,
        progress: bool = True,
    ) -> None:
        self.kafka = kafka
        self.opt = options
        self.metrics = metrics or ProducerMetrics()
        self.progress_enabled = progress
        self.summary = ReplaySummary()
        self._pending: deque[list[FutureRecordMetadata]] = deque()
        self._in_flight = 0
        self._window_started = time.monotonic()
        self._window_sent = 0

    # ---- delivery bookkeeping ---------------------------------------------------------------------
    def _settle_oldest(self) -> None:
        batch = self._pending.popleft()
        for future in batch:
            waited = 0.0
            while not future.is_done:
                try:
                    future.get(timeout=WAIT_LOG_SECONDS)
                except KafkaTimeoutError:
                    waited += WAIT_LOG_SECONDS
                    log.warning(
                        "broker slow or unreachable at %s: waited %.0f s for acknowledgements (%s in flight); "
                        "retrying, nothing is dropped",
                        self.kafka.bootstrap_servers,
                        waited,
                        f"{self._in_flight:,}",
                    )
                except Exception:  # the failure is read from the future below
                    break
            if future.failed():
                self.summary.failed += 1
                self.metrics.failed.inc()
                if self.summary.first_error is None:
                    self.summary.first_error = repr(future.exception)
            else:
                self.summary.sent += 1
                self._window_sent += 1
        self.metrics.sent.inc(len(batch) - sum(1 for f in batch if f.failed()))
        self._in_flight -= len(batch)
        self.metrics.buffer_depth.set(self._in_flight)
        now = time.monotonic()
        if now - self._window_started >= 1.0:
            self.metrics.rate.set(self._window_sent / (now - self._window_started))
            self._window_started, self._window_sent = now, 0

    def _settle_all(self) -> None:
        while self._pending:
            self._settle_oldest()

    # ---- main loop ----------------------------------------------------------------------------------
    def run(self) -> ReplaySummary:
        opt = self.opt
        started = time.monotonic()
        fingerprint = source_fingerprint(opt.path)
        self.kafka.ensure_topic(opt.topic, partitions=opt.partitions)
        skip_points: dict[int, int] = {}
        n_partitions = opt.partitions
        if opt.resume:
            skip_points = resume_points(self.kafka, opt.topic, fingerprint)
            with self.kafka.consumer() as consumer:
                n_partitions = len(consumer.partitions_for_topic(opt.topic) or []) or opt.partitions
            if skip_points:
                log.info("resuming after lines already in the topic, per partition: %s", skip_points)
        total = opt.limit if opt.limit is not None else count_data_rows(opt.path)
        bucket = TokenBucket(opt.messages_per_second) if opt.messages_per_second > 0 else None
        pacer = TimelinePacer(opt.speedup) if opt.speedup else None
        rejects_path = opt.rejects_path or opt.path.with_name(f"{opt.path.stem}.{opt.topic}.rejects.csv")
        self.summary.rejects_path = rejects_path
        progress = _Progress(total, self.progress_enabled)
        src_header = fingerprint.encode()
        rejects_file: IO[str] | None = None
        rejects_writer: Any = None
        producer_settings: dict[str, Any] = {
            "linger_ms": opt.linger_ms,
            "batch_size": opt.kafka_batch_bytes,
            "compression_type": opt.compression,
            "max_block_ms": 10 * 60 * 1000,
            "delivery_timeout_ms": 10 * 60 * 1000,
            "request_timeout_ms": 30_000,
        }
        try:
            with self.kafka.producer(**producer_settings) as producer:
                send = producer.send
                batch: list[FutureRecordMetadata] = []
                observe: Callable[[float], None] = self.metrics.latency.observe
                try:
                    for line_no, fields in iter_event_rows(opt.path):
                        if (
                            opt.limit is not None
                            and self.summary.sent + self._in_flight + len(batch) >= opt.limit
                        ):
                            break
                        self.summary.read += 1
                        try:
                            ev = parse_event_row(fields)
                        except RowError as exc:
                            if rejects_writer is None:
                                rejects_path.parent.mkdir(parents=True, exist_ok=True)
                                rejects_file = rejects_path.open("w", newline="")
                                rejects_writer = csv.writer(rejects_file)
                                rejects_writer.writerow(["line", "reason", "raw"])
                            reason = str(exc)
                            rejects_writer.writerow([line_no, reason, ",".join(fields)])
                            self.summary.rejected += 1
                            kind = reason.split(":", 1)[0]
                            self.summary.reasons[reason] += 1
                            self.metrics.rejected.labels(reason=kind).inc()
                            continue
                        key = encode_key(ev.visitorid)
                        if skip_points and line_no <= skip_points.get(partition_for(key, n_partitions), -1):
                            self.summary.skipped += 1
                            continue
                        if bucket is not None:
                            bucket.acquire()
                        if pacer is not None:
                            pacer.wait_for(ev.timestamp)
                        future = send(
                            opt.topic,
                            key=key,
                            value=encode_value(
                                ev.timestamp, ev.visitorid, ev.event, ev.itemid, ev.transactionid
                            ),
                            headers=[(HEADER_SOURCE, src_header), (HEADER_LINE, b"%d" % line_no)],
                        )
                        if line_no % LATENCY_SAMPLE_EVERY == 0:
                            sent_at = time.perf_counter()
                            future.add_callback(lambda _md, t=sent_at: observe(time.perf_counter() - t))
                        batch.append(future)
                        if len(batch) >= opt.batch_size:
                            self._pending.append(batch)
                            self._in_flight += len(batch)
                            self.metrics.buffer_depth.set(self._in_flight)
                            progress.update(len(batch), self.summary, self._in_flight)
                            batch = []
                            while len(self._pending) > opt.max_in_flight_batches:
                                self._settle_oldest()
                            if self.summary.failed:
                                break
                except KeyboardInterrupt:
                    self.summary.interrupted = True
                    log.warning("interrupted: flushing what was already handed to the client")
                if batch:
                    self._pending.append(batch)
                    self._in_flight += len(batch)
                    progress.update(len(batch), self.summary, self._in_flight)
                producer.flush()
                self._settle_all()
        finally:
            progress.close()
            if rejects_file is not None:
                rejects_file.close()
            self.metrics.read.inc(self.summary.read)
            self.summary.seconds = time.monotonic() - started
        return self.summary
