"""Sessions, funnel, item and category funnels and retention, kept by the real loading transaction and the
real sessions step in a real PostgreSQL, against an independent pandas recomputation over all events
(tests/analytics/sessions_reference.py): row for row, whatever the arrival order and the cut into runs."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest

from clickstream_dagster.analytics.sessions import change_spans, session_gap_ms
from clickstream_dagster.analytics.sessions.update import check_sessions, update_sessions
from clickstream_dagster.data.generator import generate
from clickstream_dagster.events import ParsedEvent
from clickstream_dagster.ingestion.loader import load_and_commit
from clickstream_dagster.ingestion.reader import Batch
from tests.analytics import sessions_reference as ref

GAP = 30 * 60_000
MINUTE = 60_000
T0 = 1_433_000_000_000  # mid 2015, as RetailRocket
TOPIC = "sessions-test"


# ---- pure ---------------------------------------------------------------------------------------------


def test_session_gap_comes_from_the_environment() -> None:
    assert session_gap_ms({}) == 30 * MINUTE
    assert session_gap_ms({"CLICKSTREAM_SESSION_GAP_MINUTES": "45"}) == 45 * MINUTE
    assert session_gap_ms({"CLICKSTREAM_SESSION_GAP_MINUTES": "0.5"}) == 30_000
    with pytest.raises(ValueError, match="not a number of minutes"):
        session_gap_ms({"CLICKSTREAM_SESSION_GAP_MINUTES": "half an hour"})
    with pytest.raises(ValueError, match="more than 0"):
        session_gap_ms({"CLICKSTREAM_SESSION_GAP_MINUTES": "0"})


def test_change_spans_cut_each_visitor_at_the_gap() -> None:
    visitor = np.array([2, 1, 1, 2, 1, 1], np.int64)
    ts = np.array([50, 0, GAP, 10, 3 * GAP, 3 * GAP + 1], np.int64)
    visitors, firsts, lasts = change_spans(visitor, ts, GAP)
    assert list(zip(visitors.tolist(), firsts.tolist(), lasts.tolist(), strict=True)) == [
        (1, 0, GAP),  # exactly the gap apart: one span
        (1, 3 * GAP, 3 * GAP + 1),
        (2, 10, 50),
    ]
    assert [len(a) for a in change_spans(visitor[:0], ts[:0], GAP)] == [0, 0, 0]


# ---- helpers ------------------------------------------------------------------------------------------


def frame(rows: Sequence[tuple[int, int, str, int]]) -> pd.DataFrame:
    """(timestamp, visitorid, event, itemid) rows."""
    return pd.DataFrame(rows, columns=["timestamp", "visitorid", "event", "itemid"])


def as_parsed(events: pd.DataFrame, first_offset: int = 0) -> list[ParsedEvent]:
    """Each row a message of partition 0 at consecutive offsets, in the frame's order."""
    return [
        ParsedEvent(
            int(ts), int(v), str(ev), int(it), 1 if ev == "transaction" else None, -1, 0, first_offset + k
        )
        for k, (ts, v, ev, it) in enumerate(
            events[["timestamp", "visitorid", "event", "itemid"]].itertuples(index=False)
        )
    ]


def load(conn: psycopg.Connection, events: pd.DataFrame, first_offset: int = 0) -> None:
    load_and_commit(conn, Batch(TOPIC, as_parsed(events, first_offset)))


def add_categories(conn: psycopg.Connection, categories: dict[int, int]) -> None:
    with conn.transaction():
        conn.execute(
            "INSERT INTO items (itemid, categoryid) SELECT * FROM unnest(%s::bigint[], %s::bigint[])",
            (list(categories), list(categories.values())),
        )


def assert_matches_reference(
    conn: psycopg.Connection, events: pd.DataFrame, categories: dict[int, int], gap_ms: int = GAP
) -> None:
    diffs = ref.differences(ref.recompute(events, categories, gap_ms), ref.stored(conn))
    assert not diffs, "\n".join(f"{k}: {v}" for k, v in diffs.items())


def load_in_runs(
    conn: psycopg.Connection, events: pd.DataFrame, seed: int, runs: int, gap_ms: int = GAP
) -> None:
    """The events shuffled, cut into `runs` runs of random sizes, each loaded in one to three batches and
    followed by a sessions step (as an ingest run's)."""
    rng = random.Random(seed)
    order = list(range(len(events)))
    rng.shuffle(order)
    shuffled = events.iloc[order].reset_index(drop=True)
    cuts = sorted(rng.sample(range(1, len(shuffled)), runs - 1)) if runs > 1 else []
    offset = 0
    for lo, hi in zip([0, *cuts], [*cuts, len(shuffled)], strict=True):
        run = shuffled.iloc[lo:hi]
        parts = np.array_split(np.arange(len(run)), rng.randint(1, 3))
        for part in parts:
            load(conn, run.take(part), offset)
            offset += len(part)
        update_sessions(conn, gap_ms)


def generated_events(out: Path, n: int, seed: int) -> tuple[pd.DataFrame, dict[int, int]]:
    """The project's generator: events, and a category for about four items in five (the rest unknown)."""
    generate(out, n, seed=seed)
    events = pd.read_csv(out / "events.csv", usecols=["timestamp", "visitorid", "event", "itemid"])
    rng = np.random.default_rng(seed)
    items = np.unique(events["itemid"].to_numpy())
    known = items[rng.random(len(items)) < 0.8]
    categories = dict(zip(known.tolist(), rng.integers(1, 40, len(known)).tolist(), strict=True))
    return events, categories


@pytest.fixture
def conn(pg_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(pg_url, autocommit=True) as c:
        yield c


# ---- targeted: the late event -------------------------------------------------------------------------


def sessions_of(conn: psycopg.Connection, visitor: int) -> list[tuple[int, int, int]]:
    return [
        (int(a), int(b), int(n))
        for a, b, n in conn.execute(
            "SELECT start_ms, end_ms, events FROM sessions WHERE visitorid = %s ORDER BY start_ms", (visitor,)
        )
    ]


def test_a_late_event_between_two_sessions_merges_them(conn: psycopg.Connection) -> None:
    early = frame([(T0, 7, "view", 1), (T0 + 10 * MINUTE, 7, "addtocart", 1)])
    later = frame([(T0 + 50 * MINUTE, 7, "view", 2), (T0 + 55 * MINUTE, 7, "transaction", 1)])
    load(conn, pd.concat([early, later]))
    update_sessions(conn, GAP)
    assert sessions_of(conn, 7) == [(T0, T0 + 10 * MINUTE, 2), (T0 + 50 * MINUTE, T0 + 55 * MINUTE, 2)]
    row = conn.execute("SELECT sum(bounced), sum(visitors) FROM funnel_counts WHERE grain = 'day'").fetchone()
    assert row == (0, 1)
    # 30 minutes after the first session's end and 10 before the second's start: one session of five events.
    late = frame([(T0 + 40 * MINUTE, 7, "view", 3)])
    load(conn, late, first_offset=100)
    step = update_sessions(conn, GAP)
    assert (step.sessions_removed, step.sessions_written) == (2, 1)
    assert sessions_of(conn, 7) == [(T0, T0 + 55 * MINUTE, 5)]
    everything = pd.concat([early, later, late])
    assert_matches_reference(conn, everything, {})
    merged = conn.execute(
        "SELECT converted, cart_abandoned, entry_itemid, exit_itemid, distinct_items FROM sessions"
    ).fetchone()
    assert merged == (True, False, 1, 1, 3)  # the cart of the first half is bought in the second
    check = check_sessions(conn, step.visitors, GAP)
    assert check.events_in_one_session and check.retention_adds_up and check.bad_periods == 0


def test_an_event_just_outside_a_session_extends_it_across_a_run_boundary(conn: psycopg.Connection) -> None:
    run_1 = frame([(T0, 8, "view", 1), (T0 + 20 * MINUTE, 8, "addtocart", 1)])
    load(conn, run_1)
    update_sessions(conn, GAP)
    assert sessions_of(conn, 8) == [(T0, T0 + 20 * MINUTE, 2)]
    assert conn.execute("SELECT cart_abandoned FROM sessions").fetchone() == (True,)
    # Run 2: exactly a gap after the session's end (still in it), then one before its start (also in it).
    run_2 = frame([(T0 + 50 * MINUTE, 8, "view", 2), (T0 - 30 * MINUTE, 8, "view", 3)])
    load(conn, run_2, first_offset=10)
    update_sessions(conn, GAP)
    assert sessions_of(conn, 8) == [(T0 - 30 * MINUTE, T0 + 50 * MINUTE, 4)]
    # One millisecond beyond the gap: a session of its own.
    run_3 = frame([(T0 + 80 * MINUTE + 1, 8, "transaction", 2)])
    load(conn, run_3, first_offset=20)
    update_sessions(conn, GAP)
    assert sessions_of(conn, 8) == [
        (T0 - 30 * MINUTE, T0 + 50 * MINUTE, 4),
        (T0 + 80 * MINUTE + 1,) * 2 + (1,),
    ]
    assert_matches_reference(conn, pd.concat([run_1, run_2, run_3]), {})


def test_reloading_and_empty_steps_change_nothing(conn: psycopg.Connection) -> None:
    events = frame([(T0 + k * 7 * MINUTE, 9 + k % 2, "view", k) for k in range(20)])
    load(conn, events)
    update_sessions(conn, GAP)
    before = ref.stored(conn)
    load(conn, events)  # the same offsets again: nothing inserted, nothing queued
    step = update_sessions(conn, GAP)
    assert (step.spans_taken, step.sessions_written) == (0, 0)
    after = ref.stored(conn)
    assert all(before[k].equals(after[k]) for k in before)


def test_a_new_gap_rebuilds_everything(conn: psycopg.Connection) -> None:
    events = frame([(T0 + k * 20 * MINUTE, 11, "view", k) for k in range(6)])
    load(conn, events)
    update_sessions(conn, GAP)
    assert len(sessions_of(conn, 11)) == 1
    step = update_sessions(conn, 10 * MINUTE)
    assert step.rebuilt
    assert len(sessions_of(conn, 11)) == 6
    assert_matches_reference(conn, events, {}, gap_ms=10 * MINUTE)


# ---- the independent recomputation, and arrival order --------------------------------------------------


def test_generated_events_match_pandas_in_any_order_and_any_cut(
    database_factory: Callable[..., str], tmp_path: Path
) -> None:
    """The property: the same 20,000 generated events (with same-millisecond events, carts bought in a later
    session and visitors across weeks), shuffled and cut into different runs, give identical tables, and
    they are pandas' row for row."""
    events, categories = generated_events(tmp_path, 20_000, seed=11)
    results = []
    for seed, runs in ((1, 1), (2, 7), (3, 23)):
        with psycopg.connect(database_factory(), autocommit=True) as c:
            add_categories(c, categories)
            load_in_runs(c, events, seed, runs)
            assert_matches_reference(c, events, categories)
            results.append(ref.stored(c))
            visitors = [int(v) for (v,) in c.execute("SELECT DISTINCT visitorid FROM sessions")]
            check = check_sessions(c, visitors, GAP)
            assert check.events_in_one_session and check.retention_adds_up and check.bad_periods == 0
            assert check.session_events == len(events) and check.touched_visitors == len(visitors)
    for other in results[1:]:
        for name, table in results[0].items():
            assert ref.normalized(table).equals(ref.normalized(other[name][list(table.columns)])), name


def test_a_million_generated_events_match_pandas(conn: psycopg.Connection, tmp_path: Path) -> None:
    events, categories = generated_events(tmp_path, 1_000_000, seed=5)
    add_categories(conn, categories)
    rng = np.random.default_rng(1)
    order = rng.permutation(len(events))
    offset = 0
    for part in np.array_split(order, 8):  # 8 runs of 125,000 events in random order
        load(conn, events.take(part), first_offset=offset)
        offset += len(part)
        update_sessions(conn, GAP)
    assert_matches_reference(conn, events, categories)
