"""The sensor's planning, pure: the cursor's JSON form, runs of bounded size shared fairly between partitions."""

from __future__ import annotations

from itertools import pairwise

import pytest

from clickstream_dagster.ingestion.planner import dump_cursor, fair_shares, parse_cursor, plan_runs
from clickstream_dagster.ingestion.ranges import OffsetRange, run_key


def test_plan_runs_is_fair_and_bounded() -> None:
    runs, cursor = plan_runs({0: 5}, {0: 100, 1: 10, 2: 1000}, max_events_per_run=300, max_runs=10)
    assert [sum(r.size for r in run) for run in runs] == [300, 300, 300, 205]
    assert cursor == {0: 100, 1: 10, 2: 1000}
    assert runs[0][0].start == 5
    assert fair_shares({0: 1000, 1: 1000, 2: 1000}, 301) == {0: 101, 1: 100, 2: 100}
    assert run_key("t", runs[0]) == "t/0:5-100,1:0-10,2:0-195"
    with pytest.raises(ValueError):
        plan_runs({}, {0: 1}, 0, 1)


def test_every_offset_of_the_backlog_is_planned_once_in_order() -> None:
    cursor = {0: 7, 1: 0}
    ends = {0: 1_007, 1: 333, 2: 50}
    runs, after = plan_runs(cursor, ends, max_events_per_run=100, max_runs=1_000)
    assert after == ends
    for p, end in ends.items():
        spans = [r for run in runs for r in run if r.partition == p]
        assert spans[0].start == cursor.get(p, 0) and spans[-1].end == end
        assert all(a.end == b.start for a, b in pairwise(spans))  # contiguous, no overlap
    assert all(sum(r.size for r in run) <= 100 for run in runs)
    assert all(len({r.partition for r in run}) == len(run) for run in runs)  # one range per partition


def test_max_runs_leaves_the_rest_for_the_next_tick() -> None:
    runs, after = plan_runs({}, {0: 1_000}, max_events_per_run=100, max_runs=3)
    assert runs == [[OffsetRange(0, 0, 100)], [OffsetRange(0, 100, 200)], [OffsetRange(0, 200, 300)]]
    assert after == {0: 300}
    assert run_key("t", runs[1]) == "t/0:100-200"


def test_cursor_round_trip() -> None:
    assert parse_cursor(None) == {} and parse_cursor("") == {}
    cursor = {2: 5, 0: 10**12, 1: 0}
    text = dump_cursor(cursor)
    assert text == '{"0":1000000000000,"1":0,"2":5}'
    assert parse_cursor(text) == cursor
