"""5-minute tumbling windows on event time, per event type, with exact distinct counts, kept incrementally.

The loading transaction (`pipeline.ingest`) queues, per batch of newly inserted events and per (window,
event) the batch touches, how much the batch adds to windowed_stats, in `window_deltas`: its number of
events, and the number of visitors and items the (window, event) did not have before it (its distinct sets,
`pipeline.distinct`, under the ingest lock). A pair is new in exactly one batch,
so for any set of whole batches, per (window, event):

    event_count grows by sum(events), unique_users by sum(new_users), unique_items by sum(new_items)

exactly. A run takes the committed batches (`pending_batches`), has Spark read their deltas from PostgreSQL
and aggregate them per window (`compute_window_deltas`), and `apply_window_deltas` adds the sums to
windowed_stats and removes those batches in one transaction. No run re-reads raw events, however many windows
a batch touches (a replay in file order touches nearly all of them every run).

Times are epoch milliseconds (UTC) throughout; windows are aligned to the epoch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

import psycopg
from psycopg import sql

from clickstream_dagster.resources.spark import JdbcConnection, missing_driver_hint, read_jdbc

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

WINDOW_MS = 300_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DELTAS_TABLE = "window_deltas"
# JDBC read parallelism: whole batches per partition, at most this many partitions. A run's one small batch
# is read fastest as one partition; a backlog of many batches is read in parallel. (A batch of N events has
# at most N delta rows, fewer when its events share windows.)
MAX_READ_PARTITIONS = 4
ROWS_PER_READ_PARTITION = 500_000

# Spark SQL over the queued deltas read from PostgreSQL; `{queued}` is bound to that DataFrame by
# spark.sql(). Plain SQL rather than pyspark.sql.functions, so the same code runs on local and Spark Connect
# sessions.
WINDOW_DELTAS_SPARK_SQL = """
SELECT unix_millis(window_start)    AS window_start_ms,
       event,
       sum(events)                  AS events,
       sum(new_users)               AS users,
       sum(new_items)               AS items
FROM {queued}
GROUP BY window_start, event
"""

PENDING_BATCHES_SQL = "SELECT batch_id, events FROM window_change_batches ORDER BY batch_id"

# Exactly-once: the batches must still be queued (a second applier, or a retry after a commit, finds them gone).
TAKE_BATCHES_SQL = "DELETE FROM window_change_batches WHERE batch_id = ANY(%(batches)s::bigint[])"
DELETE_DELTAS_SQL = "DELETE FROM window_deltas WHERE batch_id = ANY(%(batches)s::bigint[])"

ADD_WINDOW_DELTAS_SQL = """
INSERT INTO windowed_stats AS w
    (window_start, window_end, event, event_count, unique_users, unique_items)
SELECT start, start + interval '5 minutes', event, events, users, items
FROM unnest(%(starts)s::timestamptz[], %(events)s::text[], %(counts)s::bigint[], %(users)s::bigint[],
            %(items)s::bigint[]) AS d(start, event, events, users, items)
ON CONFLICT (window_start, event) DO UPDATE
SET event_count  = w.event_count + EXCLUDED.event_count,
    unique_users = w.unique_users + EXCLUDED.unique_users,
    unique_items = w.unique_items + EXCLUDED.unique_items,
    updated_at   = now()
"""


class WindowDelta(NamedTuple):
    window_start: datetime
    event: str
    events: int
    users: int
    items: int


class Batches(NamedTuple):
    ids: list[int]
    events: int


class ApplyResult(NamedTuple):
    batches: int
    windows: int  # distinct windows changed
    rows: int  # (window, event) rows inserted or changed


class BatchesAlreadyApplied(RuntimeError):
    pass


def window_start_ms(event_time_ms: int) -> int:
    return (event_time_ms // WINDOW_MS) * WINDOW_MS


def windows_touched(event_times_ms: Iterable[int]) -> list[int]:
    """The sorted, distinct starts (epoch ms) of the windows that contain these event times."""
    return sorted({window_start_ms(int(t)) for t in event_times_ms})


def ms_to_datetime(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def pending_batches(conn: psycopg.Connection) -> Batches:
    """The committed batches windowed_stats has not applied yet (a batch is visible only once complete)."""
    rows = conn.execute(PENDING_BATCHES_SQL).fetchall()
    return Batches([int(b) for b, _ in rows], sum(int(n) for _, n in rows))


def batch_predicates(batch_ids: Sequence[int], events: int) -> list[str]:
    """One JDBC partition's WHERE clause per group of whole batches: `batch_id IN (1, 2)`."""
    ids = sorted({int(b) for b in batch_ids})
    if not ids:
        return []
    parts = max(1, min(MAX_READ_PARTITIONS, len(ids), -(-events // ROWS_PER_READ_PARTITION)))
    groups = [ids[k::parts] for k in range(parts)]
    return [
        sql.SQL("batch_id IN ({})").format(sql.SQL(", ").join(map(sql.Literal, group))).as_string()
        for group in groups
    ]


def read_window_deltas(
    spark: SparkSession, jdbc: JdbcConnection, batch_ids: Sequence[int], events: int = 0
) -> DataFrame | None:
    """The queued deltas of these batches (window_start, event, events, new_users, new_items); None if none."""
    predicates = batch_predicates(batch_ids, events)
    if not predicates:
        return None
    return read_jdbc(spark, jdbc, DELTAS_TABLE, predicates).select(
        "window_start", "event", "events", "new_users", "new_items"
    )


def compute_window_deltas(
    spark: SparkSession, jdbc: JdbcConnection, batch_ids: Sequence[int], events: int = 0
) -> list[WindowDelta]:
    """Per (window, event): what these batches add to event_count, unique_users and unique_items."""
    try:
        queued = read_window_deltas(spark, jdbc, batch_ids, events)
        if queued is None:
            return []
        # Arrow, not collect(): no Row object per window (0.85 -> 0.59 s for 24k windows, measured).
        table = spark.sql(WINDOW_DELTAS_SPARK_SQL, queued=queued).toArrow()
    except Exception as exc:  # a local session resolves the JDBC source eagerly, Spark Connect on collect()
        hint = missing_driver_hint(exc, remote=type(spark).__module__.startswith("pyspark.sql.connect"))
        if hint:
            raise RuntimeError(hint) from exc
        raise
    columns = [
        table.column(name).to_pylist() for name in ("window_start_ms", "event", "events", "users", "items")
    ]
    return sorted(
        WindowDelta(ms_to_datetime(start), event, int(events), int(users), int(items))
        for start, event, events, users, items in zip(*columns, strict=True)
    )


def apply_window_deltas(
    conn: psycopg.Connection, batch_ids: Sequence[int], deltas: Sequence[WindowDelta]
) -> ApplyResult:
    """Add the deltas of these batches to windowed_stats and dequeue the batches, in one transaction.

    Raises BatchesAlreadyApplied (and changes nothing) if any of the batches is no longer queued. Inside a
    transaction the caller already has open, this is a savepoint and commits with it.
    """
    ids = sorted({int(b) for b in batch_ids})
    params = {
        "batches": ids,
        "starts": [d.window_start for d in deltas],
        "events": [d.event for d in deltas],
        "counts": [d.events for d in deltas],
        "users": [d.users for d in deltas],
        "items": [d.items for d in deltas],
    }
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(TAKE_BATCHES_SQL, params)
        if cur.rowcount != len(ids):
            raise BatchesAlreadyApplied(
                f"{len(ids) - cur.rowcount} of batches {ids[:5]}... were applied by another run; "
                "nothing was changed, the next run picks up what is left"
            )
        cur.execute(DELETE_DELTAS_SQL, params)
        written = 0
        if deltas:
            cur.execute(ADD_WINDOW_DELTAS_SQL, params)
            written = cur.rowcount
    return ApplyResult(batches=len(ids), windows=len({d.window_start for d in deltas}), rows=written)
