"""The binary COPY data `ingestion.columns.copy_data` builds, loaded into a real PostgreSQL: every column lands as the
SQL expressions the checks use would compute it, NULLs included, and a batch's rows in source-key order."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import psycopg
import pytest

from clickstream_dagster.events import MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS, EventColumns, ParsedEvent
from clickstream_dagster.ingestion.columns import copy_data
from clickstream_dagster.sql import queries as q
from tests.helpers import event_months

TOPIC = "clicks-ü"  # not ASCII: the text length is in bytes

# What each column must hold, from the source values by plain SQL, independent of the encoder.
MISMATCHES_SQL = """
SELECT count(*) FILTER (WHERE e."timestamp" IS DISTINCT FROM s.ts),
       count(*) FILTER (WHERE e.event_time IS DISTINCT FROM to_timestamp(s.ts::float8 / 1000)),
       count(*) FILTER (WHERE e.visitorid IS DISTINCT FROM s.visitorid OR e.itemid IS DISTINCT FROM s.itemid),
       count(*) FILTER (WHERE e.event IS DISTINCT FROM s.event),
       count(*) FILTER (WHERE e.transactionid IS DISTINCT FROM s.transactionid),
       count(*) FILTER (WHERE e.produced_at IS DISTINCT FROM
                        CASE WHEN s.produced_ms > 0 THEN to_timestamp(s.produced_ms::float8 / 1000) END),
       count(*) FILTER (WHERE e.kafka_topic IS DISTINCT FROM %(topic)s),
       count(*) FILTER (WHERE e.kafka_partition IS NULL),
       count(*)
FROM source s
LEFT JOIN clickstream_events e ON e.kafka_partition = s.part AND e.kafka_offset = s.off
"""


def _events(n: int, seed: int) -> list[ParsedEvent]:
    rng = random.Random(seed)
    events: list[ParsedEvent] = []
    for k in range(n):
        event = rng.choice(["view", "view", "addtocart", "transaction"])
        events.append(
            ParsedEvent(
                rng.randrange(MIN_TIMESTAMP_MS, MAX_TIMESTAMP_MS),
                rng.choice([0, rng.randrange(2**62)]),
                event,
                rng.randrange(2**40),
                rng.randrange(2**62) if event == "transaction" else None,
                rng.choice([0, -1, rng.randrange(MIN_TIMESTAMP_MS, MAX_TIMESTAMP_MS)]),
                k % 3,
                10_000 - k,  # offsets descending: the columns sort them
            )
        )
    return events


def _load(url: str, events: Sequence[ParsedEvent]) -> list[int]:
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE source (ts bigint, visitorid bigint, event text, itemid bigint, "
            "transactionid bigint, produced_ms bigint, part int, off bigint)"
        )
        with cur.copy("COPY source FROM STDIN") as copy:
            for row in events:
                copy.write_row(row)
        event_months(conn, [e.timestamp for e in events])
        with cur.copy(q.COPY_EVENTS) as copy:
            copy.write(copy_data(EventColumns.of(events), TOPIC))
        mismatches = cur.execute(MISMATCHES_SQL, {"topic": TOPIC}).fetchone()
        assert mismatches is not None
        order = cur.execute(
            "SELECT kafka_partition, kafka_offset FROM clickstream_events ORDER BY id"
        ).fetchall()
        assert order == sorted(order), "rows must be copied in (partition, offset) order"
        return [int(v) for v in mismatches]


@pytest.mark.parametrize("seed", [1, 2])
def test_copied_rows_equal_the_sql_expressions(pg_url: str, seed: int) -> None:
    events = _events(3_000, seed)
    *mismatches, rows = _load(pg_url, events)
    assert rows == len(events)
    assert mismatches == [0] * 8


def test_one_event_type_and_every_null(database_factory: Callable[..., str]) -> None:
    events = [
        ParsedEvent(1_433_000_000_123, 7, "view", 9, None, 0, 0, 5),
        ParsedEvent(1_433_000_000_124, 8, "view", 10, None, -5, 0, 4),
    ]
    *mismatches, rows = _load(database_factory(), events)
    assert (rows, mismatches) == (2, [0] * 8)


def test_without_leaves_out_stored_offsets() -> None:
    columns = EventColumns.of(_events(30, 3))
    kept = columns.without({(0, 10_000), (1, 9_999), (2, 5)})  # (2, 5) is not in the batch
    assert len(kept) == 28
    assert {(0, 10_000), (1, 9_999)}.isdisjoint(
        zip(kept.partition.tolist(), kept.offset.tolist(), strict=True)
    )
    assert kept.per_partition() == {0: 9, 1: 9, 2: 10}
