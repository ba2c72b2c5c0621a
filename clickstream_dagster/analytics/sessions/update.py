"""The sessions step: everything queued since the last step, applied to the sessions and every aggregate of
them in one transaction (`update_sessions`), and the checks of what it wrote (`check_sessions`).

One step at a time (a transaction-scoped advisory lock); a step killed anywhere leaves the queue as it was.
`apply_queued` is what a pipeline run calls: it applies the queue unless another caller is applying it, and
then that caller takes it again before it stops, so nothing queued is left behind and callers never wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import psycopg
from psycopg.rows import class_row
from pyroaring import BitMap64

from clickstream_dagster.analytics.sessions import queries as q
from clickstream_dagster.analytics.sessions import session_gap_ms


@dataclass(frozen=True)
class SessionsUpdate:
    """What one step did."""

    gap_ms: int
    rebuilt: bool  # the gap had changed (or was never set): everything was recomputed
    spans_taken: int  # queued spans
    spans: int  # after widening and merging
    sessions_removed: int
    sessions_written: int
    events_read: int
    visitors: list[int]  # the visitors whose sessions were recomputed
    seconds: float


def _run(cur: psycopg.Cursor, script: str, params: dict[str, object]) -> None:
    """Run each statement of `script` (statements end with ";" at the end of a line)."""
    for statement in script.split(";\n"):
        if statement.strip():
            cur.execute(statement, params if "%(" in statement else None)


def update_sessions(conn: psycopg.Connection, gap_ms: int | None = None) -> SessionsUpdate:
    """Apply every queued span (committing): recompute the sessions they can touch and add the differences."""
    gap = session_gap_ms() if gap_ms is None else gap_ms
    params: dict[str, object] = {"gap": gap}
    started = time.perf_counter()
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(q.LOCK)
        cur.execute(q.PLANNER)
        row = cur.execute(q.STORED_GAP).fetchone()
        rebuilt = row is None or int(row[0]) != gap
        if (
            rebuilt
            and row is not None
            and (dropped := cur.execute(q.EVENTS_DROPPED).fetchone())
            and dropped[0]
        ):
            raise ValueError(
                f"the session gap changed from {int(row[0]):,} ms to {gap:,} ms, but retention dropped months of"
                " events: every session cannot be computed again. Set CLICKSTREAM_SESSION_GAP_MINUTES back to"
                f" {int(row[0]) / 60_000:g}."
            )
        if rebuilt:
            _run(cur, q.RESET_FOR_GAP, params)
            cur.execute(q.SET_GAP, params)
        _run(cur, q.TAKE_CHANGES, params)
        for script in (q.SPANS, q.REMOVE_OLD, q.SESSIONIZE, q.FUNNEL_DELTAS, q.LENGTH_DELTAS):
            _run(cur, script, params)
        _run(cur, q.ITEM_DELTAS, params)
        _run(cur, q.RETENTION_DELTAS, params)
        _run(cur, q.WRITE, params)
        summary = cur.execute(q.STEP_SUMMARY).fetchone()
        assert summary is not None
        visitors = [int(v) for (v,) in cur.execute(q.TOUCHED_VISITORS)]
    taken, spans, removed, written, events, _ = (int(v) for v in summary)
    return SessionsUpdate(
        gap_ms=gap,
        rebuilt=rebuilt,
        spans_taken=taken,
        spans=spans,
        sessions_removed=removed,
        sessions_written=written,
        events_read=events,
        visitors=visitors,
        seconds=time.perf_counter() - started,
    )


def apply_queued(
    connection: Callable[[], AbstractContextManager[psycopg.Connection]], gap_ms: int | None = None
) -> list[SessionsUpdate]:
    """Apply the queue, again and again until it is empty, unless another caller holds the applier's lock:
    then return [] at once (that caller looks at the queue again after releasing the lock, so it also
    applies what this caller's run loaded before calling)."""
    steps: list[SessionsUpdate] = []
    while True:
        with connection() as conn:
            row = conn.execute(q.TRY_APPLIER_LOCK).fetchone()
            conn.commit()
            if not (row and row[0]):
                return steps
            try:
                steps.append(update_sessions(conn, gap_ms))
            finally:
                conn.execute(q.APPLIER_UNLOCK)
                conn.commit()
            queued = conn.execute(q.ANY_QUEUED).fetchone()
            conn.commit()
        if not (queued and queued[0]):
            return steps


@dataclass(frozen=True)
class QueueHead:
    """queries.QUEUE_HEAD: the spans queued for the step, and the oldest one's time and wait."""

    spans: int
    oldest_us: int | None  # when the oldest was queued, epoch microseconds (None: nothing queued)
    waited_s: float


def queue_head(conn: psycopg.Connection) -> QueueHead:
    with conn.cursor(row_factory=class_row(QueueHead)) as cur:
        row = cur.execute(q.QUEUE_HEAD).fetchone()
    assert row is not None
    return row


@dataclass(frozen=True)
class SessionsCheck:
    """The checks' figures, in one snapshot."""

    sessions: int
    session_events: int  # the sessions' events, visitors still queued left out
    stored_events: int  # clickstream_events, the same visitors left out
    queued_visitors: int
    touched_visitors: int  # of the last step's visitors, those not queued again since
    too_close: int  # pairs of one visitor's sessions within a gap of each other
    miscounted: int  # touched visitors whose sessions do not hold exactly their stored events
    bad_periods: int  # funnel periods where a step counts more than the one before it
    periods: int
    cohort_visitors: int
    distinct_visitors: int  # every visitor stored, less the queued ones not in any session yet
    cohort_sessions: int

    @property
    def events_in_one_session(self) -> bool:
        return self.too_close == 0 and self.miscounted == 0 and self.session_events == self.stored_events

    @property
    def retention_adds_up(self) -> bool:
        return self.cohort_visitors == self.distinct_visitors and self.cohort_sessions == self.sessions


def check_sessions(conn: psycopg.Connection, visitors: list[int], gap_ms: int | None = None) -> SessionsCheck:
    """The sessions, funnel and retention against the stored events, in one snapshot: totals against the
    loading transaction's event totals and visitor sets, and `visitors` (a step's) recounted one by one."""
    gap = session_gap_ms() if gap_ms is None else gap_ms
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        totals = cur.execute(q.CHECK_TOTALS).fetchone()
        everyone = BitMap64()
        for (serialized,) in cur.execute(q.EVENT_VISITOR_SETS, binary=True):
            everyone |= BitMap64.deserialize(bytes(serialized))
        touched = cur.execute(q.CHECK_TOUCHED, {"visitors": visitors, "gap": gap}).fetchone()
        funnel = cur.execute(q.CHECK_FUNNEL).fetchone()
    assert totals is not None and touched is not None and funnel is not None
    in_sessions, stored, queued, queued_new, sessions, cohort_sessions, cohort_visitors = (
        int(v) for v in totals
    )
    return SessionsCheck(
        sessions=sessions,
        session_events=in_sessions,
        stored_events=stored,
        queued_visitors=queued,
        touched_visitors=int(touched[0]),
        too_close=int(touched[1]),
        miscounted=int(touched[2]),
        bad_periods=int(funnel[0]),
        periods=int(funnel[1]),
        cohort_visitors=cohort_visitors,
        distinct_visitors=len(everyone) - queued_new,
        cohort_sessions=cohort_sessions,
    )
