"""What the recommender reads from PostgreSQL to train on: the ingested events (clickstream_events, as one
CSV COPY for pandas' C parser, much faster than fetching millions of rows) and the reference items."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import pandas as pd
import psycopg
from psycopg import sql
from psycopg.rows import scalar_row

from clickstream_dagster.ml.prep import DAY_MS
from clickstream_dagster.sql import ml as q

EVENT_DTYPES = {"timestamp": "int64", "visitorid": "int64", "event": "category", "itemid": "int64"}
ITEM_COLUMNS = ["itemid", "categoryid", "available", "category_path"]


@dataclass(frozen=True)
class TrainingInput:
    events: pd.DataFrame  # timestamp, visitorid, event, itemid, transactionid: as ingested, uncleaned
    items: pd.DataFrame  # itemid, categoryid, available, category_path (empty before the reference job ran)
    since_ms: int  # the window's first event time (0: everything)
    seconds: float  # time spent reading


def read_training_input(conn: psycopg.Connection, window_days: float | None = None) -> TrainingInput:
    """The events of the last `window_days` of event time (None: every event) and every item."""
    started = time.perf_counter()
    since = window_start(conn, window_days)
    events = read_events(conn, since)
    items = read_items(conn)
    return TrainingInput(events, items, since, time.perf_counter() - started)


def newest_event_ms(conn: psycopg.Connection) -> int:
    """The newest ingested event time, in ms (0 when nothing was ingested)."""
    with conn.cursor(row_factory=scalar_row) as cur:
        newest = cur.execute(q.MAX_EVENT_TIMESTAMP).fetchone()
    return int(newest) if newest is not None else 0


def window_start(conn: psycopg.Connection, window_days: float | None) -> int:
    """The first event time of the last `window_days` of event time (0 without a window)."""
    if window_days is None:
        return 0
    return max(newest_event_ms(conn) - int(window_days * DAY_MS), 0)


def read_events(conn: psycopg.Connection, since_ms: int) -> pd.DataFrame:
    buf = io.BytesIO()
    statement = sql.SQL(q.COPY_EVENTS_OUT).format(since_ms=sql.Literal(since_ms))
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for block in copy:
            buf.write(block)
    buf.seek(0)
    return pd.read_csv(buf, dtype=EVENT_DTYPES)


def read_items(conn: psycopg.Connection) -> pd.DataFrame:
    rows = conn.execute(q.SELECT_ITEMS).fetchall()
    return pd.DataFrame(rows, columns=ITEM_COLUMNS)
