"""Loading batches on real PostgreSQL: every valid event stored once under its source coordinates, every
invalid message quarantined with its reason and coordinates, and loading any batch again, whole or
overlapping, adds nothing twice. (What the loading transaction feeds the windows and totals is proven
against plain SQL in tests/analytics and tests/assets.)"""

from __future__ import annotations

import psycopg

from clickstream_dagster.events import ParsedEvent
from clickstream_dagster.ingestion.loader import load_and_commit
from clickstream_dagster.ingestion.reader import Batch, parse_record
from clickstream_dagster.messages import encode_value
from tests.assets.conftest import BAD_MESSAGES, random_events

TOPIC = "loader-test"


def _batch(events: list[tuple], bad_every: int = 0, partition: int = 0, first_offset: int = 0) -> Batch:
    """Messages at consecutive offsets, decoded as the reader decodes them (`parse_record`)."""
    batch = Batch(TOPIC)
    for i, e in enumerate(events):
        offset = first_offset + i
        value: bytes | None = encode_value(*e)
        if bad_every and i % bad_every == 0:
            value = BAD_MESSAGES[(i // bad_every) % len(BAD_MESSAGES)][0]
        parse_record(partition, offset, value, 1_433_000_000_000, batch)
    return batch


def _stored(conn: psycopg.Connection) -> dict[tuple[int, int], tuple]:
    rows = conn.execute(
        'SELECT kafka_partition, kafka_offset, "timestamp", visitorid, event::text, itemid, transactionid '
        "FROM clickstream_events WHERE kafka_topic = %s",
        (TOPIC,),
    ).fetchall()
    return {(p, o): tuple(rest) for p, o, *rest in rows}


def test_a_batch_is_stored_and_quarantined_exactly_and_a_reload_adds_nothing(pg_url: str) -> None:
    events = random_events(3_000, seed=17)
    batch = _batch(events, bad_every=50)
    good: list[ParsedEvent] = batch.events
    assert len(good) == 2_940 and len(batch.rejects) == 60
    with psycopg.connect(pg_url) as conn:
        first = load_and_commit(conn, batch)
        again = load_and_commit(conn, _batch(events, bad_every=50))
        stored = _stored(conn)
        quarantined = conn.execute(
            "SELECT kafka_partition, kafka_offset, reason FROM quarantine WHERE kafka_topic = %s ORDER BY 2",
            (TOPIC,),
        ).fetchall()
    assert (first.messages, first.inserted, first.quarantined) == (3_000, 2_940, 60)
    assert (again.messages, again.inserted, again.quarantined) == (3_000, 0, 0)
    assert stored == {
        (e.partition, e.offset): (e.timestamp, e.visitorid, e.event, e.itemid, e.transactionid) for e in good
    }
    assert [(p, o) for p, o, _ in quarantined] == [(r.partition, r.offset) for r in batch.rejects]
    assert [reason for _, _, reason in quarantined] == [r.reason for r in batch.rejects]


def test_an_overlapping_batch_stores_only_its_new_offsets(pg_url: str) -> None:
    events = random_events(1_000, seed=18)
    with psycopg.connect(pg_url) as conn:
        a = load_and_commit(conn, _batch(events[:600]))
        b = load_and_commit(conn, _batch(events[400:], first_offset=400))  # offsets 400-599 in both
        c = load_and_commit(conn, _batch(events[:300], partition=1))  # same offsets, another partition
        stored = _stored(conn)
    assert (a.inserted, b.inserted, c.inserted) == (600, 400, 300)
    assert len(stored) == 1_300
    assert {o for p, o in stored if p == 0} == set(range(1_000))
