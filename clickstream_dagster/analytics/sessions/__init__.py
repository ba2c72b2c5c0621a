"""Visitor sessions and what is computed from them, exact and incremental: everything about them lives here.

The rule (its one home, shared by the API's live session and the ML job's session protocol): a session is
a visitor's events with gaps of at most `session_gap_ms()` in event time (default 30 minutes,
CLICKSTREAM_SESSION_GAP_MINUTES). Events are ordered by event time; events of the same millisecond by their
funnel step (view, add-to-cart, transaction) and then item id, so a session's entry and exit item do not
depend on arrival order.

How they stay exact on a stream (`update`): a loading transaction queues, per visitor it added events for,
the event-time span of those events (`queue_changes`, one span per run of events closer than the gap). The
sessions step takes everything queued and, per visitor, widens each span to the stored sessions within a gap
of it; the widened spans are separated from every other session of the visitor by more than the gap, so
recomputing the sessions inside them from the stored events, and replacing the sessions that started there,
is exact whatever the arrival order, however the events were cut into runs, and whether a late event
extends a session or merges two. Every aggregate (funnel, lengths, items, categories, retention) then adds
the difference between the sessions written and those removed. Funnel flags are bits, 1 viewed, 2 added to
cart, 4 bought: a session's (an item's in a session, a visitor's in a period) are the bit_or of its events'. The work grows with the visitors touched and
their sessions near the new events, not with the history.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import psycopg

from clickstream_dagster.events import EventColumns
from clickstream_dagster.settings import env_number
from clickstream_dagster.sql.copy import copy_arrays

DEFAULT_GAP_MINUTES = 30.0
GAP_ENV = "CLICKSTREAM_SESSION_GAP_MINUTES"

COPY_CHANGES = "COPY session_changes (visitorid, first_ms, last_ms) FROM STDIN (FORMAT BINARY)"


def session_gap_ms(env: Mapping[str, str] | None = None) -> int:
    """The longest gap within a session, in ms (CLICKSTREAM_SESSION_GAP_MINUTES, default 30)."""
    minutes = env_number(GAP_ENV, DEFAULT_GAP_MINUTES, "minutes", env)
    if not 0 < minutes <= 7 * 24 * 60:
        raise ValueError(f"{GAP_ENV}={minutes:g}: the session gap must be more than 0 and at most a week")
    return round(minutes * 60_000)


def change_spans(visitor: np.ndarray, timestamp: np.ndarray, gap_ms: int) -> tuple[np.ndarray, ...]:
    """Per visitor, the spans (first_ms, last_ms) of their events cut where two are more than `gap_ms` apart:
    (visitors, firsts, lasts). Any cut is correct (the sessions step widens a span to the sessions near it);
    cutting at the gap keeps each span as short as its session can be."""
    n = len(visitor)
    if not n:
        empty = np.empty(0, np.int64)
        return empty, empty, empty
    order = np.lexsort((timestamp, visitor))
    v, t = visitor[order], timestamp[order]
    opens = np.ones(n, np.bool_)
    opens[1:] = (v[1:] != v[:-1]) | (t[1:] - t[:-1] > gap_ms)
    first = np.flatnonzero(opens)
    last = np.append(first[1:], n) - 1
    return v[first], t[first], t[last]


def queue_changes(cur: psycopg.Cursor, events: EventColumns, gap_ms: int | None = None) -> int:
    """Queue the spans of newly inserted events for the sessions step (in the loading transaction, so the
    spans commit with the rows). Returns the number of spans queued."""
    if not len(events):
        return 0
    spans = change_spans(events.visitor, events.timestamp, session_gap_ms() if gap_ms is None else gap_ms)
    copy_arrays(cur, COPY_CHANGES, ("int8", "int8", "int8"), list(spans))
    return len(spans[0])
