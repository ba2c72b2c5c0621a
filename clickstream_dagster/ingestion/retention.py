"""How long raw events are kept, and how late an event may arrive (docs/operations.md, "Running it for months").

- The lateness horizon (CLICKSTREAM_LATENESS_HORIZON_DAYS, default 180): an event whose event time is more than
  this before the newest event stored is quarantined ("later than the lateness horizon", by the loader)
  instead of loaded. Within it every result stays exact; beyond it the windows and sessions it would change
  are closed, so their state need not be kept. 180 days: a replay of the RetailRocket file (139 days, rows not
  in time order) loads whole, and it matches the training window; a live shop's stragglers arrive within
  minutes or days.
- Retention (CLICKSTREAM_EVENT_RETENTION_DAYS, default unset: keep every month): `drop_expired_months` drops
  the months of clickstream_events (migration 0017) that ended more than this before the newest event. Kept
  forever: every aggregate (windows, totals, sessions, funnels, retention cohorts), the ledger (each range
  counts the rows dropped from it) and the quarantine. A month is dropped only when nothing can need its rows
  again: all of them are in the ledger, and no session begun in it can still change (none ends within a
  session gap of where the lateness horizon or a queued span lets new events land). Months go oldest first;
  the first one that must stay stops the drop until the next time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from clickstream_dagster.analytics.sessions import session_gap_ms
from clickstream_dagster.ingestion import months
from clickstream_dagster.settings import env_number
from clickstream_dagster.sql import queries as q

DAY_MS = 86_400_000
LATENESS_ENV = "CLICKSTREAM_LATENESS_HORIZON_DAYS"
DEFAULT_LATENESS_DAYS = 180.0
RETENTION_ENV = "CLICKSTREAM_EVENT_RETENTION_DAYS"
# How long a drop waits for the loading transactions in flight before it tries again at the next month's turn.
LOCK_TIMEOUT = "15s"


def lateness_ms(env: Mapping[str, str] | None = None) -> int:
    """The lateness horizon in ms (CLICKSTREAM_LATENESS_HORIZON_DAYS, default 180)."""
    days = env_number(LATENESS_ENV, DEFAULT_LATENESS_DAYS, "days", env)
    if not days > 0:
        raise ValueError(f"{LATENESS_ENV}={days:g}: the lateness horizon must be more than 0 days")
    return round(days * DAY_MS)


def retention_days(env: Mapping[str, str] | None = None) -> float | None:
    """Days of event time kept (CLICKSTREAM_EVENT_RETENTION_DAYS; None, the default: every month is kept). At
    least the lateness horizon: an event the horizon accepts must have a month to go to."""
    days = env_number(RETENTION_ENV, 0.0, "days", env)
    if not days:
        return None
    horizon = lateness_ms(env) / DAY_MS
    if days < horizon:
        raise ValueError(
            f"{RETENTION_ENV}={days:g}: retention must keep at least the lateness horizon ({horizon:g} days,"
            f" {LATENESS_ENV})"
        )
    return days


@dataclass(frozen=True)
class DroppedMonth:
    name: str
    from_ts: int
    to_ts: int
    rows: int


@dataclass
class RetentionResult:
    dropped: list[DroppedMonth] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # month -> why it stays (the first one stops the drop)

    @property
    def rows(self) -> int:
        return sum(m.rows for m in self.dropped)


def drop_expired_months(
    conn: psycopg.Connection,
    keep_days: float,
    lateness: int | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> RetentionResult:
    """Drop the months of clickstream_events that ended more than `keep_days` before the newest event, oldest
    first, each in its own transaction; stops at the first month that must stay (the reason in `kept`)."""
    horizon = lateness_ms() if lateness is None else lateness
    result = RetentionResult()
    with conn.transaction():  # (ends here: each month is dropped in its own transaction)
        row = conn.execute(q.NEWEST_EVENT_MS).fetchone()
        stored = [months.Month.of_name(name) for (name,) in conn.execute(q.MONTHS).fetchall()]
    if row is None or row[0] is None:
        return result
    limit = int(row[0]) - round(keep_days * DAY_MS)
    for month in sorted((m for m in stored if m.end_ms <= limit), key=lambda m: m.start_ms):
        name = month.name
        why = _drop_month(conn, name, month.start_ms, month.end_ms, horizon, result)
        if why:
            result.kept[name] = why
            log(f"kept {name}: {why}")
            break
        log(f"dropped {name}: {result.dropped[-1].rows:,} rows")
    return result


def _drop_month(
    conn: psycopg.Connection, name: str, from_ts: int, to_ts: int, horizon: int, result: RetentionResult
) -> str | None:
    """Drop one month, or say why it must stay."""
    month = sql.Identifier(name)
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
        try:
            # No loading transaction is between reading the horizons and inserting (LOADING_LOCK) from here.
            conn.execute(q.HOLD_LOADING)
        except psycopg.errors.LockNotAvailable:
            return f"loading transactions held clickstream_events for more than {LOCK_TIMEOUT}; next time"
        conn.execute(q.COMPACTION_LOCK)  # the ledger's rows stay as they are until this month's are counted
        row = conn.execute(q.RETENTION_STATE).fetchone()
        assert row is not None
        newest = int(row[0])
        gap = int(row[1]) if row[1] is not None else session_gap_ms()
        # Where new events can land from now on: not before the lateness horizon, nor before a queued span; a
        # session within a gap of there may still be recomputed from its events.
        reach = newest - horizon if row[2] is None else min(newest - horizon, int(row[2]))
        if reach < to_ts:
            return "events may still land in it (within the lateness horizon, or a span queued for sessions)"
        row = conn.execute(q.SESSIONS_STILL_OPEN, {"before": to_ts, "reach": reach - gap}).fetchone()
        if row and row[0]:
            return f"{row[0]:,} sessions begun in it may still change"
        per_range = conn.execute(sql.SQL(q.MONTH_ROWS_BY_RANGE).format(month=month)).fetchall()
        row = conn.execute(sql.SQL(q.MONTH_ROWS).format(month=month)).fetchone()
        rows = int(row[0]) if row else 0
        if sum(int(r[4]) for r in per_range) != rows:
            return "some of its rows are not in the ledger yet"
        if per_range:
            topics, partitions, starts, ends, counts = (list(c) for c in zip(*per_range, strict=True))
            conn.execute(
                q.ADD_ROWS_DROPPED,
                {
                    "topics": topics,
                    "partitions": partitions,
                    "starts": starts,
                    "ends": ends,
                    "counts": counts,
                },
            )
        conn.execute(sql.SQL(q.ADD_DROPPED_VISITOR_EVENTS).format(month=month))
        conn.execute(q.RECORD_DROPPED_MONTH, {"name": name, "from_ts": from_ts, "to_ts": to_ts, "rows": rows})
        conn.execute(sql.SQL("DROP TABLE {}").format(month))
    result.dropped.append(DroppedMonth(name, from_ts, to_ts, rows))
    return None
