"""Loading one batch into PostgreSQL, all or nothing.

`load_batch` COPYs the events whose source coordinates are not stored yet straight into clickstream_events
(`columns`), in one transaction together with the quarantine rows, the batch's window deltas and the per event
type totals. A run killed anywhere leaves either all of a batch or none of it, and re-loading any batch never
duplicates (the unique source key, and the offsets already stored left out).

The COPY runs outside any lock, so the batches of concurrent runs insert in parallel. Only then does the
transaction take the ingest lock, to add the events it inserted to the distinct sets (`analytics.distinct`):
one batch at a time, each counted against every batch committed before it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import psycopg

from clickstream_dagster.analytics import distinct, sessions
from clickstream_dagster.events import EventColumns
from clickstream_dagster.ingestion.columns import copy_data
from clickstream_dagster.ingestion.reader import Batch
from clickstream_dagster.sql import queries as q
from clickstream_dagster.sql.copy import copy_rows

# Inserts of one batch that other transactions' rows of the same offsets may interrupt before it gives up.
MAX_INSERT_ATTEMPTS = 5


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
            sessions.queue_changes(cur, copied)
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
