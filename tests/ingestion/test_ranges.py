"""The offset range's forms, pure: dict (run config, SQL, metadata), tag text (runs, run keys), subtraction."""

from __future__ import annotations

import random

from clickstream_dagster.ingestion.ranges import OffsetRange, from_tag, run_key, subtract, to_tag


def test_dict_form_round_trips() -> None:
    r = OffsetRange(3, 10, 25)
    assert r.as_dict() == {"partition": 3, "start": 10, "end": 25}
    assert OffsetRange.from_dict(r.as_dict()) == r
    assert r.size == 15


def test_tag_form_is_in_partition_order_and_round_trips() -> None:
    ranges = [OffsetRange(2, 0, 5), OffsetRange(0, 100, 200), OffsetRange(1, 7, 7)]
    assert to_tag(ranges) == "0:100-200,1:7-7,2:0-5"
    assert from_tag(to_tag(ranges)) == sorted(ranges, key=lambda r: r.partition)
    assert from_tag("") == []


def test_run_key_is_deterministic_whatever_the_order() -> None:
    a = [OffsetRange(1, 0, 10), OffsetRange(0, 5, 9)]
    assert run_key("topic", a) == run_key("topic", list(reversed(a))) == "topic/0:5-9,1:0-10"


def test_subtract_matches_a_set_of_offsets() -> None:
    """Independently: the offsets left are those of the spans minus those of the covering ranges."""
    rng = random.Random(4)
    for _ in range(300):
        spans = [OffsetRange(p, s, s + rng.randrange(0, 40)) for p in range(2) for s in [rng.randrange(50)]]
        covering = [
            OffsetRange(rng.randrange(2), s, s + rng.randrange(0, 20))
            for s in (rng.randrange(60) for _ in range(rng.randrange(4)))
        ]
        left = subtract(spans, covering)
        expected = {(r.partition, o) for r in spans for o in range(r.start, r.end)} - {
            (c.partition, o) for c in covering for o in range(c.start, c.end)
        }
        assert {(r.partition, o) for r in left for o in range(r.start, r.end)} == expected
        assert all(r.size > 0 for r in left)
