"""Reading exact Kafka offset ranges and loading them into PostgreSQL, effectively once.

`read_ranges` assigns and seeks (no consumer group, no commits) and stops at each range's end offset, so the
same range always yields the same messages. `load_batch` COPYs them into temp staging tables and inserts with
`ON CONFLICT DO NOTHING` on the source coordinates, in one transaction together with the quarantine rows,
the distinct-pair sets, the dirty-window queue and the range ledger: a run killed anywhere leaves either all
of a batch or none of it, and re-running any range never duplicates.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
from kafka import KafkaConsumer, TopicPartition

from clickstream_dagster.messages import MessageError, decode_value
from clickstream_dagster.sql import queries as q


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
    """Parsed messages of one read: good rows for clickstream_events, bad ones for the quarantine."""

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


def parse_record(
    topic: str, partition: int, offset: int, value: bytes | None, ts_ms: int, batch: Batch
) -> None:
    try:
        m = decode_value(value)
    except MessageError as exc:
        batch.rejects.append((topic, partition, offset, value, str(exc)))
        return
    batch.events.append(
        (
            m.timestamp,
            datetime.fromtimestamp(m.timestamp / 1000, UTC),
            m.visitorid,
            m.event,
            m.itemid,
            m.transactionid,
            datetime.fromtimestamp(ts_ms / 1000, UTC) if ts_ms and ts_ms > 0 else None,
            topic,
            partition,
            offset,
        )
    )


def read_ranges(
    consumer: KafkaConsumer,
    topic: str,
    ranges: Sequence[OffsetRange],
    batch_size: int = 100_000,
    stall_timeout_s: float = 60.0,
) -> Iterator[Batch]:
    """Yield parsed batches covering exactly `ranges` (each message once, in offset order per partition)."""
    todo = {r.partition: r for r in ranges if r.size > 0}
    if not todo:
        return
    tps = {p: TopicPartition(topic, p) for p in todo}
    consumer.assign(list(tps.values()))
    for p, r in todo.items():
        consumer.seek(tps[p], r.start)
    next_offset = {p: r.start for p, r in todo.items()}
    batch = Batch(topic)
    last_progress = time.monotonic()
    while todo:
        polled = consumer.poll(timeout_ms=1000, max_records=50_000)
        if not polled:
            if time.monotonic() - last_progress > stall_timeout_s:
                missing = {p: (next_offset[p], r.end) for p, r in todo.items()}
                raise RangeReadError(
                    f"no messages from {topic} for {stall_timeout_s:.0f} s while offsets {missing} "
                    "(partition: (next, end)) were still expected; are they deleted by retention?"
                )
            continue
        last_progress = time.monotonic()
        for tp, records in polled.items():
            wanted = todo.get(tp.partition)
            if wanted is None:
                continue
            for rec in records:
                if rec.offset >= wanted.end:
                    break
                if rec.offset < next_offset[tp.partition]:
                    continue  # already seen (a re-seek can repeat the tail of a fetch)
                parse_record(topic, tp.partition, rec.offset, rec.value, rec.timestamp, batch)
                next_offset[tp.partition] = rec.offset + 1
            if next_offset[tp.partition] >= wanted.end:
                del todo[tp.partition]
                consumer.pause(tp)
        if batch.size >= batch_size:
            yield batch
            batch = Batch(topic)
    if batch.size:
        yield batch


def _stage_and_insert(
    cur: psycopg.Cursor,
    create: str,
    copy_sql: str,
    types: tuple[str, ...],
    rows: list[tuple[object, ...]],
    insert: str,
) -> Counter[int]:
    """COPY rows into a temp staging table, insert them idempotently; count new rows per partition."""
    cur.execute(create)
    with cur.copy(copy_sql) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)
    cur.execute(insert)
    return Counter(p for (p,) in cur.fetchall())


def load_batch(conn: psycopg.Connection, batch: Batch) -> LoadResult:
    """Insert one parsed batch; the caller's transaction makes it all-or-nothing."""
    result = LoadResult(messages=batch.size)
    with conn.cursor() as cur:
        if batch.events:
            result.inserted_by_partition = _stage_and_insert(
                cur,
                q.CREATE_EVENT_STAGING,
                q.COPY_EVENT_STAGING,
                q.EVENT_STAGING_TYPES,
                batch.events,
                q.INSERT_EVENTS_FROM_STAGING,
            )
            result.inserted = sum(result.inserted_by_partition.values())
            cur.execute(q.INSERT_SEEN_VISITORS)
            cur.execute(q.INSERT_SEEN_ITEMS)
            cur.execute(q.MARK_DIRTY_WINDOWS)
        if batch.rejects:
            result.quarantined_by_partition = _stage_and_insert(
                cur,
                q.CREATE_QUARANTINE_STAGING,
                q.COPY_QUARANTINE_STAGING,
                q.QUARANTINE_STAGING_TYPES,
                batch.rejects,
                q.INSERT_QUARANTINE_FROM_STAGING,
            )
            result.quarantined = sum(result.quarantined_by_partition.values())
            result.reasons.update(str(reject[4]).split(":", 1)[0] for reject in batch.rejects)
    return result


def ingest_ranges(
    consumer: KafkaConsumer,
    conn: psycopg.Connection,
    topic: str,
    ranges: Sequence[OffsetRange],
    run_id: str | None,
    batch_size: int = 100_000,
) -> LoadResult:
    """Read `ranges` and load them batch by batch (one transaction each), then record them in the ledger.

    `inserted` counts rows new to the table: a re-run of a loaded range inserts 0 and quarantines 0.
    """
    total = LoadResult()
    for batch in read_ranges(consumer, topic, ranges, batch_size=batch_size):
        with conn.transaction():
            total.add(load_batch(conn, batch))
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
