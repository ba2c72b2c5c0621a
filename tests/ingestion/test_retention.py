"""Retention and the lateness horizon on real PostgreSQL (ingestion/retention.py, ingestion/months.py): whole
months of clickstream_events are dropped with every aggregate and the ledger's proof kept, a month that
sessions may still need stays, a dropped month's messages loaded again are refused (never doubled), a message
never loaded whose month is gone, or later than the lateness horizon, is quarantined with its reason, and the
recount from the source's side still finds every message exactly once (stored, quarantined or dropped)."""

from __future__ import annotations

import psycopg
import psycopg.rows
import pytest

from clickstream_dagster.analytics.sessions import update
from clickstream_dagster.analytics.windows.sets import close_windows
from clickstream_dagster.assets.ingestion import RangeCheck
from clickstream_dagster.ingestion import months, retention
from clickstream_dagster.ingestion.loader import LATENESS_REASON, RETENTION_REASON, load_and_commit
from clickstream_dagster.ingestion.reader import Batch, parse_record
from clickstream_dagster.messages import encode_value
from clickstream_dagster.sql import queries as q
from clickstream_dagster.sql.row_rules import CHECK_ALL_RANGES
from tests.analytics.sessions_reference import differences, stored
from tests.assets.conftest import random_events

TOPIC = "retention-test"
DAY_MS = 86_400_000
START_MS = 1_430_438_400_000  # 2015-05-01T00:00Z
BATCH = 1_000
GAP_MS = 30 * 60_000


def _batch(events: list[tuple], first_offset: int) -> Batch:
    batch = Batch(TOPIC)
    for i, e in enumerate(events):
        parse_record(0, first_offset + i, encode_value(*e), START_MS, batch)
    return batch


def _load(conn: psycopg.Connection, events: list[tuple], first_offset: int) -> None:
    """Loaded in batches of BATCH, each recorded in the ledger as the ingest run records its ranges."""
    for lo in range(0, len(events), BATCH):
        chunk = events[lo : lo + BATCH]
        result = load_and_commit(conn, _batch(chunk, first_offset + lo))
        conn.execute(
            "INSERT INTO ingested_ranges (kafka_topic, kafka_partition, start_offset, end_offset, messages_read,"
            " rows_inserted, rows_quarantined) VALUES (%s, 0, %s, %s, %s, %s, %s)",
            (
                TOPIC,
                first_offset + lo,
                first_offset + lo + len(chunk),
                len(chunk),
                result.inserted,
                result.quarantined,
            ),
        )


def _months(conn: psycopg.Connection) -> list[str]:
    return [name for (name,) in conn.execute(q.MONTHS)]


def _ranges(conn: psycopg.Connection) -> list[RangeCheck]:
    with conn.cursor(row_factory=psycopg.rows.class_row(RangeCheck)) as cur:
        return cur.execute(CHECK_ALL_RANGES).fetchall()


def test_months_dropped_keep_every_aggregate_and_the_proof(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLICKSTREAM_LATENESS_HORIZON_DAYS", "20")
    # Four months of events in event-time order (May to August 2015), 40 a day.
    events = sorted(random_events(4_920, seed=5, start_ms=START_MS, span_ms=123 * DAY_MS))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        _load(conn, events, 0)
        update.update_sessions(conn, GAP_MS)
        assert _months(conn) == [f"clickstream_events_2015_{m:02d}" for m in (5, 6, 7, 8)]
        totals = conn.execute("SELECT * FROM event_totals ORDER BY event").fetchall()
        sessions_before = stored(conn)
        per_month: dict[str, int] = dict(
            conn.execute(
                "SELECT to_char(event_time AT TIME ZONE 'UTC', 'MM'), count(*) FROM clickstream_events GROUP BY 1"
            ).fetchall()
        )
        newest = max(e[0] for e in events)

        # Lateness 75 days: May ended before the horizon, June did not (events may still land in it).
        first = retention.drop_expired_months(conn, keep_days=40, lateness=75 * DAY_MS)
        assert [m.name for m in first.dropped] == ["clickstream_events_2015_05"]
        assert first.rows == per_month["05"]
        assert (
            list(first.kept) == ["clickstream_events_2015_06"]
            and "may still land" in first.kept["clickstream_events_2015_06"]
        )
        # With the loader's horizon (20 days) June goes too; July ends after the 40 days kept.
        second = retention.drop_expired_months(conn, keep_days=40, lateness=20 * DAY_MS)
        assert [m.name for m in second.dropped] == ["clickstream_events_2015_06"] and not second.kept
        assert _months(conn) == ["clickstream_events_2015_07", "clickstream_events_2015_08"]
        assert retention.drop_expired_months(conn, keep_days=40, lateness=20 * DAY_MS).dropped == []

        # The windows that ended more than the horizon before the newest event are closed: their sets go.
        horizon_start = f"to_timestamp(({newest} - {20 * DAY_MS}) / 1000.0) - interval '5 minutes'"
        open_sets = conn.execute(
            f"SELECT window_start, event, visitors, items FROM window_sets WHERE window_start >= {horizon_start}"
            " ORDER BY 1, 2"
        ).fetchall()
        closed = conn.execute(
            f"SELECT count(*) FROM window_sets WHERE window_start < {horizon_start}"
        ).fetchone()
        assert open_sets and closed and closed[0] > 0
        assert close_windows(conn, 20 * DAY_MS) == closed[0]
        assert (
            conn.execute(
                "SELECT window_start, event, visitors, items FROM window_sets ORDER BY 1, 2"
            ).fetchall()
            == open_sets
        )

        # Every aggregate kept, and the ledger still proves every message: stored + dropped + quarantined.
        assert conn.execute("SELECT * FROM event_totals ORDER BY event").fetchall() == totals
        assert differences(sessions_before, stored(conn)) == {}
        ranges = _ranges(conn)
        assert all(r.reconciles for r in ranges), [r for r in ranges if not r.reconciles]
        assert sum(r.dropped for r in ranges) == per_month["05"] + per_month["06"]
        check = update.check_sessions(conn, [e[1] for e in events], GAP_MS)
        assert check.events_in_one_session and check.retention_adds_up, check

        # Loading May again (a replay of its offsets): refused, nothing stored or quarantined twice.
        may = [e for e in events if e[0] < START_MS + 31 * DAY_MS]
        again = load_and_commit(conn, _batch(may[:BATCH], 0))
        assert (again.inserted, again.quarantined, again.refused) == (0, 0, BATCH)
        # New messages: one whose month is gone, one later than the horizon, one within it.
        offset = len(events)
        fresh = [
            (START_MS + 3 * DAY_MS, 1, "view", 1, None),  # May
            (newest - 30 * DAY_MS, 2, "view", 2, None),  # August, 30 days before the newest
            (newest - 2 * DAY_MS, 3, "view", 3, None),
        ]
        new = load_and_commit(conn, _batch(fresh, offset))
        assert (new.inserted, new.quarantined, new.refused) == (1, 2, 0)
        reasons = conn.execute(
            "SELECT kafka_offset, split_part(reason, ':', 1) FROM quarantine WHERE kafka_topic = %s ORDER BY 1",
            (TOPIC,),
        ).fetchall()
        assert reasons == [(offset, RETENTION_REASON), (offset + 1, LATENESS_REASON)]
        conn.execute(
            "INSERT INTO ingested_ranges (kafka_topic, kafka_partition, start_offset, end_offset, messages_read,"
            " rows_inserted, rows_quarantined) VALUES (%s, 0, %s, %s, 3, 1, 2)",
            (TOPIC, offset, offset + 3),
        )

        # The recount from the source's side: every offset produced is stored, quarantined or dropped, once.
        kept = {
            o
            for (o,) in conn.execute(
                "SELECT kafka_offset FROM clickstream_events WHERE kafka_topic = %s", (TOPIC,)
            )
        }
        quarantined = {
            o for (o,) in conn.execute("SELECT kafka_offset FROM quarantine WHERE kafka_topic = %s", (TOPIC,))
        }
        dropped = {o for o, e in enumerate(events) if e[0] < START_MS + 61 * DAY_MS}
        assert not kept & quarantined and not kept & dropped and not quarantined & dropped
        assert kept | quarantined | dropped == set(range(len(events) + 3))
        assert all(r.reconciles for r in _ranges(conn))

        # The sessions step goes on from what is kept; a new gap would need the dropped events: refused.
        update.update_sessions(conn, GAP_MS)
        check = update.check_sessions(conn, [3], GAP_MS)
        assert check.events_in_one_session and check.retention_adds_up, check
        with pytest.raises(ValueError, match="retention dropped months"):
            update.update_sessions(conn, GAP_MS * 2)
        with pytest.raises(ValueError, match="never created again"):
            months.ensure(conn.cursor(), [months.Month(2015, 5)])
