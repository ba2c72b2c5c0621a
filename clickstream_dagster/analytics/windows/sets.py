"""The distinct visitors and items of each (5-minute window, event type), kept as id sets, and the deltas a
batch adds.

A window's sets are small (tens of ids) and a catching-up batch touches tens of thousands of them, so they are
sorted int64 arrays (`window_sets`, big-endian bytes, as PostgreSQL's int8send writes them), merged with the
batch for all windows at once with numpy. What a set did not have before a batch is exactly what the batch
adds to that window's unique_users / unique_items, queued in `window_deltas` for windowed_stats (`stats`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import psycopg

from clickstream_dagster.analytics.windows import WINDOW_MS
from clickstream_dagster.analytics.windows import queries as q
from clickstream_dagster.events import EventColumns
from clickstream_dagster.sql import queries as sq
from clickstream_dagster.sql.copy import copy_rows

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


def close_windows(conn: psycopg.Connection, horizon_ms: int) -> int:
    """Delete the sets of the windows that ended more than `horizon_ms` (the lateness horizon) before the newest
    event stored; returns how many (window, event type) sets went. Loading transactions wait meanwhile (none is
    between reading the newest event and inserting: ingestion/months.py), so no event lands in a closed window."""
    with conn.transaction():
        conn.execute(sq.HOLD_LOADING)
        row = conn.execute(sq.NEWEST_EVENT_MS).fetchone()
        if row is None or row[0] is None:
            return 0
        return conn.execute(q.CLOSE_WINDOWS, {"newest": int(row[0]), "horizon": horizon_ms}).rowcount


def rebuild_window_sets(cur: psycopg.Cursor) -> None:
    """Build every window's sets from the rows stored so far (a database loaded before the sets existed)."""
    cur.execute(q.TRUNCATE_WINDOW_SETS)
    cur.execute(q.REBUILD_WINDOW_SETS)


def queue_window_deltas(cur: psycopg.Cursor, cols: EventColumns) -> None:
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
    rows = (
        (
            g // n_events,
            cols.names[g % n_events],
            int(counts[k]),
            int(visitors.added[k]),
            int(items.added[k]),
            visitors.sets[k],
            items.sets[k],
        )
        for k, g in enumerate(touched.tolist())
    )
    copy_rows(cur, q.COPY_WINDOW_SETS_STAGING, q.WINDOW_SETS_STAGING_TYPES, rows)
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
