"""Reading exact ranges on the real broker: a transactional upstream leaves commit and abort markers and aborted
records between the messages. The reader returns exactly what a plain read_committed consumer gets, in offset
order, for any cut of the partition into ranges, and accounts for every other offset by its cause."""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

from clickstream_dagster.clients.kafka import KafkaClient
from clickstream_dagster.events import ParsedEvent
from clickstream_dagster.ingestion.ranges import OffsetRange
from clickstream_dagster.ingestion.reader import RangeReader
from tests.assets.conftest import random_events
from tests.assets.test_offset_gaps import Transactions, _plain
from tests.helpers import committed_in_topic


def _read(
    client: KafkaClient, ranges: list[OffsetRange], batch_size: int = 1_000
) -> tuple[list, RangeReader]:
    with client.bulk_consumer() as consumer:
        reader = RangeReader(consumer, client.topic, ranges, batch_size=batch_size, stall_timeout_s=30)
        events: list[ParsedEvent] = [e for batch in reader.batches() for e in batch.events]
        reader.account_for_gaps()
    return events, reader


def test_any_cut_reads_the_committed_messages_and_accounts_for_every_offset(
    bootstrap_servers: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory(partitions=1)
    events = random_events(700, seed=41)
    tx = Transactions(bootstrap_servers, topic)
    tx.write(events[:200], 0, commit=True)
    tx.write(events[200:300], 0, commit=False)  # aborted: 100 records and a marker
    _plain(bootstrap_servers, topic, events[300:400], 0)
    tx.write(events[400:700], 0, commit=True)
    client = KafkaClient(bootstrap_servers=bootstrap_servers, topic=topic)
    end = client.end_offsets()[0]
    committed = committed_in_topic(bootstrap_servers, topic, 1)  # the independent side
    assert len(committed) == 600 and end == 600 + 100 + 3  # three transaction markers

    whole, reader = _read(client, [OffsetRange(0, 0, end)])
    assert [(e.partition, e.offset) for e in whole] == sorted(committed)
    expected = events[:200] + events[300:]
    assert [(e.timestamp, e.visitorid, e.event, e.itemid, e.transactionid) for e in whole] == expected
    [rr] = reader.ranges.values()
    assert rr.done and rr.failure is None
    assert (rr.read, rr.skipped_control, rr.skipped_aborted, rr.lost_retention) == (600, 3, 100, 0)
    assert rr.unaccounted == 0

    # Cut anywhere, even inside the aborted transaction or on a marker: the same messages, each once.
    for cuts in ([0, 150, 250, 401, end], [0, 1, 200, 201, 301, 302, end]):
        pieces: list[ParsedEvent] = []
        for start, stop in pairwise(cuts):
            part, part_reader = _read(client, [OffsetRange(0, start, stop)], batch_size=64)
            [prr] = part_reader.ranges.values()
            assert prr.done and prr.unaccounted == 0, (start, stop, prr)
            pieces.extend(part)
        assert pieces == whole
