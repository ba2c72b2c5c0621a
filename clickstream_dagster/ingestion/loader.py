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
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from clickstream_dagster.analytics import distinct, sessions
from clickstream_dagster.events import EventColumns
from clickstream_dagster.ingestion import months
from clickstream_dagster.ingestion.columns import copy_data
from clickstream_dagster.ingestion.reader import Batch, QuarantineRow, quarantine_row
from clickstream_dagster.ingestion.retention import lateness_ms
from clickstream_dagster.messages import encode_value
from clickstream_dagster.sql import queries as q
from clickstream_dagster.sql.copy import copy_rows

# Inserts of one batch that other transactions' rows of the same offsets may interrupt before it gives up.
MAX_INSERT_ATTEMPTS = 5
# The quarantine's reasons for a message never loaded whose month retention dropped, and for one that arrived
# later than the lateness horizon (ingestion/retention.py has both settings).
RETENTION_REASON = "before retention"
LATENESS_REASON = "later than the lateness horizon"


@dataclass
class LoadResult:
    messages: int = 0
    inserted: int = 0
    quarantined: int = 0
    # Loaded once already, in a month retention dropped since: left out, proven by the ledger.
    refused: int = 0
    # The events of the batch held back (refused or quarantined: retention dropped their month, or they came
    # later than the lateness horizon), with the reason.
    held_back: dict[tuple[int, int], str] = field(default_factory=dict)
    reasons: Counter[str] = field(default_factory=Counter)
    inserted_by_partition: Counter[int] = field(default_factory=Counter)
    quarantined_by_partition: Counter[int] = field(default_factory=Counter)

    def add(self, other: LoadResult) -> None:
        self.messages += other.messages
        self.inserted += other.inserted
        self.quarantined += other.quarantined
        self.refused += other.refused
        self.held_back.update(other.held_back)
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
        rejects = list(batch.rejects)
        if batch.events:
            events, held = _hold_back(cur, batch.topic, EventColumns.of(batch.events), result)
            rejects.extend(held)
            copied = _copy_new(conn, cur, batch.topic, events)
            result.inserted_by_partition = copied.per_partition()
            result.inserted = len(copied)
            sessions.queue_changes(cur, copied)
        if rejects:
            cur.execute(q.CREATE_QUARANTINE_STAGING)  # private to this transaction: no lock needed
            copy_rows(cur, q.COPY_QUARANTINE_STAGING, q.QUARANTINE_STAGING_TYPES, rejects)
            cur.execute(q.INSERT_QUARANTINE_FROM_STAGING, {"topic": batch.topic})
            result.quarantined_by_partition = Counter(dict(cur.fetchall()))
            result.quarantined = sum(result.quarantined_by_partition.values())
            result.reasons.update(reject.reason.split(":", 1)[0] for reject in rejects)
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
    if not len(events):
        return events
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


def _hold_back(
    cur: psycopg.Cursor, topic: str, events: EventColumns, result: LoadResult
) -> tuple[EventColumns, list[QuarantineRow]]:
    """The batch's events held to the two horizons (ingestion/months.py reads them, creating the batch's
    months): those of a month retention dropped, then those later than the lateness horizon, are left out
    (recorded in `result`); returns the events to load and the quarantine rows of those held back."""
    horizons = months.prepare(cur, events)
    rejects: list[QuarantineRow] = []
    if horizons.kept_from is not None and (too_old := events.timestamp < horizons.kept_from).any():
        old = events.take(too_old)
        coordinates = zip(old.partition.tolist(), old.offset.tolist(), strict=True)
        result.held_back.update(dict.fromkeys(coordinates, RETENTION_REASON))
        events, result.refused, gone = _before_retention(cur, topic, events, too_old, horizons.kept_from)
        rejects.extend(gone)
    if horizons.newest is not None and len(events):
        late = events.timestamp < horizons.newest - lateness_ms()
        if late.any():
            events, too_late = _later_than_horizon(cur, topic, events, late, horizons.newest)
            rejects.extend(too_late)
            result.held_back.update({(r.partition, r.offset): LATENESS_REASON for r in too_late})
    return events, rejects


def _before_retention(
    cur: psycopg.Cursor, topic: str, events: EventColumns, too_old: npt.NDArray[np.bool_], kept_from: int
) -> tuple[EventColumns, int, list[QuarantineRow]]:
    """Events whose month retention dropped are never loaded (their month is not created again). Those within a
    range of the ledger were loaded once: a second load would double them, so they are refused (left out,
    counted). Any other one is a message never loaded: quarantined, with its reason and coordinates (its
    payload written again from its fields)."""
    old = events.take(too_old)
    params = {"topic": topic, "partitions": old.partition.tolist(), "offsets": old.offset.tolist()}
    loaded = {(int(p), int(o)) for p, o in cur.execute(q.IN_LEDGER, params)}
    rejects = []
    for k in range(len(old)):
        coordinates = (int(old.partition[k]), int(old.offset[k]))
        if coordinates in loaded:
            continue
        reason = f"{RETENTION_REASON}: event time {_iso(int(old.timestamp[k]))}, before {_iso(kept_from)}"
        rejects.append(quarantine_row(*coordinates, _payload(old, k), reason))
    return events.take(~too_old), len(loaded), rejects


def _later_than_horizon(
    cur: psycopg.Cursor, topic: str, events: EventColumns, late: npt.NDArray[np.bool_], newest: int
) -> tuple[EventColumns, list[QuarantineRow]]:
    """Events more than the lateness horizon older than the newest event stored before this batch: the windows
    and sessions they would change are closed (their state may be gone). Quarantined with that reason, unless
    stored already (a re-run: left in, for `_copy_new` to leave out as it does any stored event)."""
    params = {"topic": topic, **_offset_bounds(events.take(late))}
    stored = {(int(p), int(o)) for p, o in cur.execute(q.STORED_OFFSETS, params)}
    quarantined = late.copy()
    for k in np.flatnonzero(late):
        if (int(events.partition[k]), int(events.offset[k])) in stored:
            quarantined[k] = False
    rejects = [
        quarantine_row(
            int(events.partition[k]),
            int(events.offset[k]),
            _payload(events, int(k)),
            f"{LATENESS_REASON}: event time {_iso(int(events.timestamp[k]))}, more than the lateness horizon"
            f" before the newest event stored, {_iso(newest)}",
        )
        for k in np.flatnonzero(quarantined)
    ]
    return events.take(~quarantined), rejects


def _payload(events: EventColumns, k: int) -> bytes:
    """The message's value written again from its fields (the canonical form the producer writes)."""
    transaction = int(events.transaction[k]) if events.has_transaction[k] else None
    event = events.names[int(events.event[k])]
    return encode_value(
        int(events.timestamp[k]), int(events.visitor[k]), event, int(events.item[k]), transaction
    )


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _offset_bounds(events: EventColumns) -> dict[str, Any]:
    """The lowest and highest offset of the events in each partition (they are in source-key order), and the
    lowest and highest event time of all (the months a stored copy can be in)."""
    partitions, first = np.unique(events.partition, return_index=True)
    last = np.append(first[1:], len(events)) - 1
    return {
        "partitions": partitions.tolist(),
        "lows": events.offset[first].tolist(),
        "highs": events.offset[last].tolist(),
        "ts_lo": int(events.timestamp.min()),
        "ts_hi": int(events.timestamp.max()),
    }


def load_and_commit(conn: psycopg.Connection, batch: Batch) -> LoadResult:
    """`load_batch` in its own transaction."""
    with conn.transaction():
        return load_batch(conn, batch)
