"""One ingest run's work: read exact ranges (`reader`), load them batch by batch (`loader`), then prove and
record each range in the ledger (`ledger`)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import confluent_kafka
import psycopg

from clickstream_dagster.ingestion.ledger import record_range
from clickstream_dagster.ingestion.loader import LoadResult, load_and_commit
from clickstream_dagster.ingestion.ranges import OffsetRange
from clickstream_dagster.ingestion.reader import DEFAULT_BATCH_SIZE, RangeReader, RangeReadError


def ingest_ranges(
    consumer: confluent_kafka.Consumer,
    conn: psycopg.Connection,
    topic: str,
    ranges: Sequence[OffsetRange],
    run_id: str | None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    stall_timeout_s: float = 60.0,
) -> LoadResult:
    """Read `ranges` and load them batch by batch (one transaction each), then record each range read in
    full in the ledger, with every offset accounted for. A range that could not be read is left out of the
    ledger (a gap, which the contiguity check names and the sensor requests again) and RangeReadError is
    raised after the other ranges are recorded.

    `inserted` counts rows new to the table: a re-run of a loaded range inserts 0 and quarantines 0.
    """
    total = LoadResult()
    reader = RangeReader(consumer, topic, ranges, batch_size=batch_size, stall_timeout_s=stall_timeout_s)
    # One batch loads (in PostgreSQL, on a worker thread) while the next one is read and decoded (here):
    # decoding is Python work, loading mostly waits on the server, so the two overlap. At most two batches
    # are in memory; the connection is only used by the worker until the loads are done.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="load-batch") as loader:
        loading: Future[LoadResult] | None = None
        for batch in reader.batches():
            if loading is not None:
                total.add(loading.result())
            loading = loader.submit(load_and_commit, conn, batch)
        if loading is not None:
            total.add(loading.result())
    reader.account_for_gaps()
    read = [rr for rr in reader.ranges.values() if rr.failure is None]
    for rr in read:
        if rr.unaccounted:  # a bug, never a state to record
            rr.failure = f"{rr.unaccounted} offsets of {rr.range} not accounted for"
    with conn.transaction():
        for rr in reader.ranges.values():
            if rr.failure is None:
                record_range(conn, topic, rr, total, run_id)
    failed = {p: rr.failure for p, rr in reader.ranges.items() if rr.failure}
    if failed:
        raise RangeReadError(
            f"could not read {topic} partitions {failed}; the other partitions' ranges are loaded and recorded"
        )
    return total
