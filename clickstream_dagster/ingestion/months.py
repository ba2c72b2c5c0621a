"""The months of clickstream_events (migration 0017): one partition per calendar month (UTC) of event time.

A batch's months are created when it first needs them (`prepare`), in the batch's own transaction: a month is
created as a table and then attached, under a lock that lets every read and insert of clickstream_events go
on. Retention (`ingestion.retention`) drops whole months; a dropped month is never created again, and
`prepare` says which of a batch's events fall before the months retention kept, for the loader to refuse
(those loaded once already: the ledger proves them) or quarantine (never loaded) instead of loading them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from clickstream_dagster.events import EventColumns
from clickstream_dagster.sql import queries as q

PREFIX = "clickstream_events_"


@dataclass(frozen=True)
class Month:
    year: int
    month: int

    @classmethod
    def of_ms(cls, ms: int) -> Month:
        t = datetime.fromtimestamp(ms / 1000, UTC)
        return cls(t.year, t.month)

    @classmethod
    def of_name(cls, name: str) -> Month:
        """The month of a partition's name (`clickstream_events_YYYY_MM`)."""
        year, month = name.removeprefix(PREFIX).split("_")
        return cls(int(year), int(month))

    @property
    def name(self) -> str:
        return f"{PREFIX}{self.year:04d}_{self.month:02d}"

    @property
    def start_ms(self) -> int:
        return int(datetime(self.year, self.month, 1, tzinfo=UTC).timestamp()) * 1000

    @property
    def end_ms(self) -> int:
        return self.next().start_ms

    def next(self) -> Month:
        return Month(self.year + self.month // 12, self.month % 12 + 1)


def months_of(timestamps: npt.ArrayLike) -> list[Month]:
    """The distinct months of these event times (epoch ms), oldest first."""
    days = np.unique(np.asarray(timestamps, np.int64) // 86_400_000)  # days first: a few hundred at most
    return sorted({Month.of_ms(int(day) * 86_400_000) for day in days}, key=lambda m: (m.year, m.month))


def ensure(cur: psycopg.Cursor, months: list[Month]) -> list[str]:
    """Create those of `months` that are missing (never one retention dropped); returns the names created. For
    tools and tests that write rows into clickstream_events themselves (the loader uses `prepare`)."""
    row = cur.execute(q.MONTHS_MISSING, {"names": [m.name for m in months]}).fetchone()
    missing, kept_from = (row[0], row[1]) if row else ([], None)
    dropped = [m.name for m in months if kept_from is not None and m.start_ms < kept_from]
    if dropped:
        raise ValueError(f"months {dropped} are before the months retention kept: never created again")
    if not missing:
        return []
    with cur.connection.transaction():  # (a savepoint inside the caller's transaction, if it has one)
        return _create(cur, months)


def _create(cur: psycopg.Cursor, months: list[Month]) -> list[str]:
    wanted = {m.name: m for m in months}
    cur.execute(q.MONTHS_LOCK)
    row = cur.execute(q.MONTHS_MISSING, {"names": list(wanted)}).fetchone()
    created = []
    for name in row[0] if row else []:
        month = wanted[name]
        ident = sql.Identifier(name)
        cur.execute(sql.SQL(q.CREATE_MONTH).format(month=ident))
        cur.execute(
            sql.SQL(q.ATTACH_MONTH).format(
                month=ident, lo=sql.Literal(month.start_ms), hi=sql.Literal(month.end_ms)
            )
        )
        created.append(name)
    return created


@dataclass(frozen=True)
class Horizons:
    """What a loading transaction saw before its insert: where the months retention kept begin and the newest
    event time stored (epoch ms; None: retention dropped nothing / nothing is stored)."""

    kept_from: int | None
    newest: int | None


def prepare(cur: psycopg.Cursor, events: EventColumns) -> Horizons:
    """Create the months of `events` that are missing (none before the months retention kept) and return the
    horizons the batch is held to. Must run inside the loading transaction, before its COPY: from here on it
    holds the lock its insert takes, so retention waits for it."""
    cur.execute(q.LOADING_LOCK)
    months = months_of(events.timestamp)
    row = cur.execute(q.MONTHS_MISSING, {"names": [m.name for m in months]}).fetchone()
    missing, kept_from, newest = row if row else ([], None, None)
    if missing:
        _create(cur, [m for m in months if kept_from is None or m.start_ms >= kept_from])
    return Horizons(kept_from, newest)
