"""Exact distinct counts kept as id sets: the visitors and items each (5-minute window, event type) and each
event type already has.

A loading transaction adds its newly inserted events to the sets they touch (`add_events`, under the ingest
lock, so batches are added one at a time): what a set did not have before the batch is exactly what the batch
adds to that window's or event type's unique_users / unique_items. Over any set of batches these additions
sum to count(DISTINCT ...), as a plain SQL recount shows (tests/analytics/test_windows.py).

Two representations, each for its size:
- a window's sets are small and many: sorted int64 arrays, merged with numpy (`analytics.windows.sets`);
- an event type's sets are large (1.4M visitors at full scale) and few, so they are roaring bitmaps
  (pyroaring; ~200 kB for 1.4M visitors) next to the totals in `event_totals`.

Adding a batch reads and rewrites only the sets it touches. No index of clickstream_events is probed or
scanned for the counts, so the insert itself does not need the lock.
"""

from __future__ import annotations

import psycopg
from pyroaring import BitMap64

from clickstream_dagster.analytics.windows.sets import queue_window_deltas, rebuild_window_sets
from clickstream_dagster.events import EventColumns
from clickstream_dagster.sql import queries as q


def add_events(cur: psycopg.Cursor, events: EventColumns) -> None:
    """Queue the window deltas of newly inserted events and add them to the per event type totals.

    The caller holds the ingest lock until it commits.
    """
    if not len(events):
        return
    queue_window_deltas(cur, events)
    _add_event_totals(cur, events)


def sets_missing(cur: psycopg.Cursor) -> bool:
    """Totals stored without their sets: a database loaded before the sets existed (migration 0007)."""
    row = cur.execute(q.EVENT_SETS_MISSING).fetchone()
    return bool(row and row[0])


def rebuild_sets(cur: psycopg.Cursor) -> None:
    """Build every set from the rows stored so far (once, for a database loaded before the sets existed).

    The caller holds the ingest lock and has not inserted anything yet in this transaction.
    """
    rebuild_window_sets(cur)
    events = [str(e) for (e,) in cur.execute(q.EVENT_TYPES_STORED).fetchall()]
    visitor_sets, item_sets = [], []
    for event in events:
        visitors = BitMap64(v for (v,) in cur.execute(q.DISTINCT_VISITORS_OF_EVENT, (event,)))
        items = BitMap64(i for (i,) in cur.execute(q.DISTINCT_ITEMS_OF_EVENT, (event,)))
        visitor_sets.append(visitors)
        item_sets.append(items)
    cur.execute(
        q.REPLACE_EVENT_SETS,
        {
            "events": events,
            "users": [len(s) for s in visitor_sets],
            "items": [len(s) for s in item_sets],
            "visitor_sets": [s.serialize() for s in visitor_sets],
            "item_sets": [s.serialize() for s in item_sets],
        },
    )


def _add_event_totals(cur: psycopg.Cursor, cols: EventColumns) -> None:
    stored = {
        str(event): (
            BitMap64.deserialize(bytes(visitors)) if visitors else BitMap64(),
            BitMap64.deserialize(bytes(items)) if items else BitMap64(),
        )
        for event, visitors, items in cur.execute(q.EVENT_SETS, binary=True)
    }
    rows: dict[str, list[object]] = {
        "events": [],
        "counts": [],
        "users": [],
        "items": [],
        "visitor_sets": [],
        "item_sets": [],
        "last": [],
    }
    for code, name in enumerate(cols.names):
        mine = cols.event == code
        visitors, items = stored.get(name, (BitMap64(), BitMap64()))
        users_before, items_before = len(visitors), len(items)
        visitors.update(cols.visitor[mine])
        items.update(cols.item[mine])
        rows["events"].append(name)
        rows["counts"].append(int(mine.sum()))
        rows["users"].append(len(visitors) - users_before)
        rows["items"].append(len(items) - items_before)
        rows["visitor_sets"].append(visitors.serialize())
        rows["item_sets"].append(items.serialize())
        rows["last"].append(int(cols.timestamp[mine].max()))
    cur.execute(q.ADD_EVENT_TOTALS, rows)
