"""Exact distinct counts kept as id sets: the visitors and items each (5-minute window, event type) and each
event type already has.

A loading transaction adds its newly inserted events to the sets they touch (`add_events`, under the ingest
lock, so batches are added one at a time): what a set did not have before the batch is exactly what the batch
adds to that window's or event type's unique_users / unique_items. Over any set of batches these additions
sum to count(DISTINCT ...), as a plain SQL recount shows (tests/analytics/test_windows.py).

Two representations, each for its size:
- a window's sets are small (tens of ids) and a catching-up batch touches tens of thousands of them, so they
  are sorted int64 arrays (`window_sets`, big-endian bytes, as PostgreSQL's int8send writes them), merged
  with the batch for all windows at once with numpy;
- an event type's sets are large (1.4M visitors at full scale) and few, so they are roaring bitmaps
  (pyroaring; ~200 kB for 1.4M visitors) next to the totals in `event_totals`.

Adding a batch reads and rewrites only the sets it touches. No index of clickstream_events is probed or
scanned for the counts, so the insert itself does not need the lock.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import psycopg
from pyroaring import BitMap64

from clickstream_dagster.analytics.windows import WINDOW_MS
from clickstream_dagster.pipeline.columns import EventColumns
from clickstream_dagster.sql import queries as q

Ids = npt.NDArray[np.int64]
STORED_ID = np.dtype(">i8")  # a window set's bytes: its sorted ids, 8 bytes each, big-endian (int8send)


def _groups(events: EventColumns) -> Ids:
    """One number per (window, event type): window number (start / 5 minutes) * event types + type code."""
    return (events.timestamp // WINDOW_MS) * len(events.names) + events.event


@dataclass
class Merged:
    """Per touched group (in sorted order): how many ids the batch added, and the group's ids after it."""

    added: Ids
    sets: list[bytes]


def add_events(cur: psycopg.Cursor, events: EventColumns) -> None:
    """Queue the window deltas of newly inserted events and add them to the per event type totals.

    The caller holds the ingest lock until it commits.
    """
    if not len(events):
        return
    _queue_window_deltas(cur, events)
    _add_event_totals(cur, events)


def sets_missing(cur: psycopg.Cursor) -> bool:
    """Totals stored without their sets: a database loaded before the sets existed (migration 0007)."""
    row = cur.execute(q.EVENT_SETS_MISSING).fetchone()
    return bool(row and row[0])


def rebuild_sets(cur: psycopg.Cursor) -> None:
    """Build every set from the rows stored so far (once, for a database loaded before the sets existed).

    The caller holds the ingest lock and has not inserted anything yet in this transaction.
    """
    cur.execute(q.TRUNCATE_WINDOW_SETS)
    cur.execute(q.REBUILD_WINDOW_SETS)
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


def _queue_window_deltas(cur: psycopg.Cursor, cols: EventColumns) -> None:
    """Merge the batch into the window sets it touches and queue what it added to each for windowed_stats."""
    group = _groups(cols)
    touched, counts = np.unique(group, return_counts=True)
    n_events = len(cols.names)
    stored: dict[int, tuple[bytes, bytes]] = {}
    for window, event, visitors, items in cur.execute(
        q.WINDOW_SETS_OF,
        {"windows": (touched // n_events).tolist(), "events": [cols.names[k] for k in touched % n_events]},
        binary=True,  # bytea as bytes: half the data of the text format's hex, and no decoding
    ):
        stored[int(window) * n_events + cols.names.index(event)] = (bytes(visitors), bytes(items))
    none = (b"", b"")
    visitors = merge_window_sets(
        touched, group, cols.visitor, [stored.get(g, none)[0] for g in touched.tolist()]
    )
    items = merge_window_sets(touched, group, cols.item, [stored.get(g, none)[1] for g in touched.tolist()])
    cur.execute(q.CREATE_WINDOW_SETS_STAGING)
    with cur.copy(q.COPY_WINDOW_SETS_STAGING) as copy:
        copy.set_types(q.WINDOW_SETS_STAGING_TYPES)
        for k, g in enumerate(touched.tolist()):
            window, event = divmod(g, n_events)
            copy.write_row(
                (
                    window,
                    cols.names[event],
                    int(counts[k]),
                    int(visitors.added[k]),
                    int(items.added[k]),
                    visitors.sets[k],
                    items.sets[k],
                )
            )
    cur.execute(q.UPSERT_WINDOW_SETS)
    cur.execute(q.QUEUE_WINDOW_DELTAS, {"events": int(counts.sum())})
    cur.execute(q.DROP_WINDOW_SETS_STAGING)


def merge_window_sets(touched: Ids, group: Ids, ids: Ids, stored: list[bytes]) -> Merged:
    """Union each touched group's stored ids (sorted, distinct) with the batch's, for all groups at once.

    Each (group, id) pair becomes one number, group index * width + id, ordered as the pairs are; so the
    stored pairs come out sorted already (groups in order, each one's ids sorted), and the batch's new pairs
    are those not found among them by binary search. Ids too large for that (width * groups past int64) are
    first replaced by their rank among all ids in play, which keeps the order (a sort of every stored id).
    """
    sizes = np.fromiter(map(len, stored), np.int64, len(stored)) // STORED_ID.itemsize
    stored_ids = np.frombuffer(b"".join(stored), STORED_ID).astype(np.int64)
    lowest = min(int(stored_ids.min(initial=0)), int(ids.min(initial=0)))
    highest = max(int(stored_ids.max(initial=0)), int(ids.max(initial=0)))
    values: Ids | None = None
    if lowest >= 0 and (highest + 1) * len(touched) < 2**63:
        width, stored_rank, batch_rank = highest + 1, stored_ids, ids
    else:
        values, rank = np.unique(np.concatenate([stored_ids, ids]), return_inverse=True)
        width, stored_rank, batch_rank = len(values), rank[: len(stored_ids)], rank[len(stored_ids) :]
    stored_keys = np.repeat(np.arange(len(touched), dtype=np.int64), sizes) * width + stored_rank
    batch_keys = np.unique(np.searchsorted(touched, group) * width + batch_rank)
    at = np.searchsorted(stored_keys, batch_keys)
    found = at < len(stored_keys)
    found[found] = stored_keys[at[found]] == batch_keys[found]
    new_keys = batch_keys[~found]
    union = np.insert(stored_keys, at[~found], new_keys)
    added = np.bincount(new_keys // width, minlength=len(touched)).astype(np.int64)
    union_ids = (union % width if values is None else values[union % width]).astype(STORED_ID)
    bounds = np.searchsorted(union // width, np.arange(len(touched)), side="right")
    starts = np.concatenate([[0], bounds[:-1]])
    return Merged(added, [union_ids[s:e].tobytes() for s, e in zip(starts, bounds, strict=True)])


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
