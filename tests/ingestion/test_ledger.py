"""The ledger's proof on real PostgreSQL: ranges recorded with `record_range` against a plan recorded as the
sensor records it; gaps and overlaps equal an independent computation over sets of offsets, less what is in
flight."""

from __future__ import annotations

import random
from collections import Counter

import psycopg

from clickstream_dagster.ingestion.ledger import gap_offsets_behind, ledger_spans, ledger_state, record_range
from clickstream_dagster.ingestion.loader import LoadResult
from clickstream_dagster.ingestion.ranges import OffsetRange
from clickstream_dagster.ingestion.reader import RangeRead
from clickstream_dagster.sql import queries as q

TOPIC = "ledger-test"


def _record(conn: psycopg.Connection, r: OffsetRange) -> None:
    read = RangeRead(r, read=r.size, next_offset=r.end, done=True)
    total = LoadResult(inserted_by_partition=Counter({r.partition: r.size}))
    record_range(conn, TOPIC, read, total, run_id="run")


def test_gaps_and_overlaps_equal_sets_of_offsets(pg_url: str) -> None:
    rng = random.Random(9)
    plan = {0: (100, 1_000), 1: (0, 500), 2: (50, 50)}  # partition: (first offset, planned to)
    recorded: list[OffsetRange] = []
    for p, (first, planned) in plan.items():
        position = first
        while position < planned:
            size = rng.randrange(1, 90)
            if rng.random() < 0.8:  # some spans are never read: gaps
                recorded.append(OffsetRange(p, position, min(position + size, planned)))
            position += size
    recorded.append(OffsetRange(0, 300, 340))  # read twice by two ranges: an overlap
    in_flight = [OffsetRange(1, 0, 60)]
    with psycopg.connect(pg_url) as conn:
        for p, (first, planned) in plan.items():
            conn.execute(q.RECORD_PLAN, {"topic": TOPIC, "partitions": [p], "offsets": [first]})
            conn.execute(q.RECORD_PLAN, {"topic": TOPIC, "partitions": [p], "offsets": [planned]})
        for r in recorded:
            _record(conn, r)
        state = ledger_state(conn, TOPIC, in_flight)
        spans = ledger_spans(conn, TOPIC)

    def offsets(ranges: list[OffsetRange]) -> Counter[tuple[int, int]]:
        return Counter((r.partition, o) for r in ranges for o in range(r.start, r.end))

    planned_offsets = {(p, o) for p, (first, end) in plan.items() for o in range(first, end)}
    read = offsets(recorded)
    expected_gaps = planned_offsets - set(read) - set(offsets(in_flight))
    assert set(offsets(state.gaps)) == expected_gaps and expected_gaps
    assert sum(offsets(state.gaps).values()) == len(expected_gaps)  # no offset named twice
    twice = {k for k, n in read.items() if n > 1}
    assert set(offsets(state.overlaps)) == twice and twice
    assert state.in_flight == in_flight
    # The exporter's figure: gap offsets of a partition behind where its ledger has read to.
    for p in plan:
        read_to = max((r.end for r in recorded if r.partition == p), default=0)
        behind = {o for q_, o in planned_offsets - set(read) if q_ == p and o < read_to}
        assert gap_offsets_behind([s for s in spans if s.partition == p], read_to) == len(behind)


def test_a_contiguous_ledger_has_no_gap_and_a_rerecorded_range_is_no_overlap(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        conn.execute(q.RECORD_PLAN, {"topic": TOPIC, "partitions": [0], "offsets": [0]})
        conn.execute(q.RECORD_PLAN, {"topic": TOPIC, "partitions": [0], "offsets": [300]})
        for r in (OffsetRange(0, 0, 100), OffsetRange(0, 100, 300), OffsetRange(0, 100, 300)):
            _record(conn, r)
        state = ledger_state(conn, TOPIC, [])
        rows = conn.execute(
            "SELECT count(*) FROM ingested_ranges WHERE kafka_topic = %s", (TOPIC,)
        ).fetchone()
    assert state.gaps == [] and state.overlaps == []
    assert rows == (2,)  # the same range recorded again is one row
