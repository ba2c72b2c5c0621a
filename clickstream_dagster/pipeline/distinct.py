"""Exact distinct counts kept as compressed id sets: the visitors and items each (5-minute window, event type)
and each event type already has, as roaring bitmaps (pyroaring) stored in PostgreSQL.

A loading transaction adds its newly inserted events to the sets they touch (`add_events`, under the ingest
lock, so batches are added one at a time): what a set did not have before the batch is exactly what the batch
adds to that window's or event type's unique_users / unique_items. Over any set of batches these additions
sum to count(DISTINCT ...), as a plain SQL recount shows (tests/analytics/test_windows.py).

Adding a batch reads and rewrites only the sets it touches: a catching-up batch of 500k events about 20k small
window sets, a steady stream's batch a few, plus the event types' sets (~200 kB each at full scale). No index
of clickstream_events is probed or scanned for the counts, so the insert itself does not need the lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from pyroaring import BitMap64

from clickstream_dagster.analytics.windows import WINDOW_MS, ms_to_datetime
from clickstream_dagster.sql import queries as q


@dataclass
class IdSets:
    """One (window, event) or one event type: its events and its distinct visitors and items."""

    events: int = 0
    visitors: BitMap64 = field(default_factory=BitMap64)
    items: BitMap64 = field(default_factory=BitMap64)

    @classmethod
    def stored(cls, visitors: bytes | None, items: bytes | None) -> IdSets:
        return cls(
            visitors=BitMap64.deserialize(visitors) if visitors else BitMap64(),
            items=BitMap64.deserialize(items) if items else BitMap64(),
        )

    def add(self, other: IdSets) -> tuple[int, int]:
        """Add `other` in place; returns how many visitors and items were new here."""
        users, items = len(self.visitors), len(self.items)
        self.events += other.events
        self.visitors |= other.visitors
        self.items |= other.items
        return len(self.visitors) - users, len(self.items) - items


def add_events(cur: psycopg.Cursor, events: Sequence[Sequence[object]]) -> None:
    """Queue the window deltas of newly inserted events and add them to the per event type totals.

    `events` are rows as `Batch.events` holds them: (timestamp ms, visitorid, event, itemid, ...). The caller
    holds the ingest lock until it commits.
    """
    if not events:
        return
    windows = _group_by_window(events)
    _queue_window_deltas(cur, windows, len(events))
    _add_event_totals(cur, windows)


def sets_missing(cur: psycopg.Cursor) -> bool:
    """Totals stored without their sets: a database loaded before the sets existed (migration 0007)."""
    row = cur.execute(q.EVENT_SETS_MISSING).fetchone()
    return bool(row and row[0])


def rebuild_sets(cur: psycopg.Cursor) -> None:
    """Build every set from the rows stored so far (once, for a database loaded before the sets existed).

    The caller holds the ingest lock and has not inserted anything yet in this transaction.
    """
    cur.execute(q.TRUNCATE_WINDOW_SETS)
    totals: dict[str, IdSets] = {}
    with cur.connection.cursor(name="stored_window_sets") as stored:  # server-side: streamed, not all at once
        stored.execute(q.WINDOW_SETS_OF_STORED_ROWS)
        while rows := stored.fetchmany(10_000):
            windows = {
                (start, event): IdSets(int(n), BitMap64(visitors), BitMap64(items))
                for start, event, n, visitors, items in rows
            }
            _write_window_sets(cur, windows)
            for (_, event), sets in windows.items():
                totals.setdefault(event, IdSets()).add(sets)
    cur.execute(
        q.REPLACE_EVENT_SETS,
        {
            "events": list(totals),
            "users": [len(s.visitors) for s in totals.values()],
            "items": [len(s.items) for s in totals.values()],
            "visitor_sets": [s.visitors.serialize() for s in totals.values()],
            "item_sets": [s.items.serialize() for s in totals.values()],
        },
    )


def _group_by_window(events: Sequence[Sequence[object]]) -> dict[tuple[datetime, str], IdSets]:
    ids: dict[tuple[int, str], tuple[list[int], list[int]]] = {}
    for row in events:
        timestamp, visitorid, event, itemid = row[0], row[1], row[2], row[3]
        key = (int(timestamp) // WINDOW_MS, str(event))  # type: ignore[call-overload]
        found = ids.get(key)
        if found is None:
            found = ids[key] = ([], [])
        found[0].append(visitorid)  # type: ignore[arg-type]
        found[1].append(itemid)  # type: ignore[arg-type]
    return {
        (ms_to_datetime(window * WINDOW_MS), event): IdSets(
            len(visitors), BitMap64(visitors), BitMap64(items)
        )
        for (window, event), (visitors, items) in ids.items()
    }


def _queue_window_deltas(cur: psycopg.Cursor, batch: dict[tuple[datetime, str], IdSets], events: int) -> None:
    """Add the batch to the window sets it touches and queue what it added for windowed_stats."""
    starts = sorted({start for start, _ in batch})
    stored = {
        (start, event): IdSets.stored(visitors, items)
        for start, event, visitors, items in cur.execute(q.WINDOW_SETS_OF, {"starts": starts})
    }
    deltas: dict[tuple[datetime, str], tuple[int, int, int]] = {}
    for key, added in batch.items():
        sets = stored.setdefault(key, IdSets())
        new_users, new_items = sets.add(added)
        deltas[key] = (added.events, new_users, new_items)
    _write_window_sets(cur, {key: stored[key] for key in batch}, deltas, events)


def _write_window_sets(
    cur: psycopg.Cursor,
    windows: dict[tuple[datetime, str], IdSets],
    deltas: dict[tuple[datetime, str], tuple[int, int, int]] | None = None,
    events: int = 0,
) -> None:
    """Upsert these window sets; with `deltas` (and the batch's `events`), queue those for windowed_stats too."""
    cur.execute(q.CREATE_WINDOW_SETS_STAGING)
    with cur.copy(q.COPY_WINDOW_SETS_STAGING) as copy:
        copy.set_types(q.WINDOW_SETS_STAGING_TYPES)
        for key, sets in windows.items():
            added = deltas[key] if deltas is not None else (0, 0, 0)
            copy.write_row((*key, *added, sets.visitors.serialize(), sets.items.serialize()))
    cur.execute(q.UPSERT_WINDOW_SETS)
    if deltas is not None:
        cur.execute(q.QUEUE_WINDOW_DELTAS, {"events": events})
    cur.execute(q.DROP_WINDOW_SETS_STAGING)


def _add_event_totals(cur: psycopg.Cursor, windows: dict[tuple[datetime, str], IdSets]) -> None:
    batch: dict[str, IdSets] = {}
    for (_, event), sets in windows.items():
        batch.setdefault(event, IdSets()).add(sets)
    stored = {event: IdSets.stored(visitors, items) for event, visitors, items in cur.execute(q.EVENT_SETS)}
    events, counts, users, items, visitor_sets, item_sets = [], [], [], [], [], []
    for event, added in batch.items():
        sets = stored.setdefault(event, IdSets())
        new_users, new_items = sets.add(added)
        events.append(event)
        counts.append(added.events)
        users.append(new_users)
        items.append(new_items)
        visitor_sets.append(sets.visitors.serialize())
        item_sets.append(sets.items.serialize())
    cur.execute(
        q.ADD_EVENT_TOTALS,
        {
            "events": events,
            "counts": counts,
            "users": users,
            "items": items,
            "visitor_sets": visitor_sets,
            "item_sets": item_sets,
        },
    )
