"""bench/loading: raw_events' loading transaction alone (`load_batch`) at several batch sizes, on an embedded
PostgreSQL with the real schema, over the first rows of the generated dataset in file order.

Each batch size loads the same rows into a fresh database, one transaction per batch, as raw_events does
(staging COPY, the insert into clickstream_events, the distinct sets, window deltas and event totals). Peer
from the same run: one COPY of the same rows into an unindexed table, the floor for moving them into
PostgreSQL.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import psycopg

from bench.pipeline import _dataset
from clickstream_dagster.analytics.windows import WINDOW_MS
from clickstream_dagster.data.readers import iter_event_rows, parse_event_row
from clickstream_dagster.events import ParsedEvent
from clickstream_dagster.ingestion.loader import load_and_commit
from clickstream_dagster.ingestion.reader import Batch
from clickstream_dagster.sql.migrate import apply_migrations
from clickstream_dagster.stack.config import Ports, StackConfig, with_database
from clickstream_dagster.stack.postgres import EmbeddedPostgres, ensure_database
from clickstream_dagster.stack.process import free_port

Row = ParsedEvent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", default="full", help="generated dataset scale (default: full)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rows", type=int, default=1_500_000, help="rows to load per batch size")
    parser.add_argument(
        "--batch-sizes", default="100000,250000,500000", help="comma-separated rows per transaction"
    )
    parser.add_argument(
        "--stream-batches",
        type=int,
        default=0,
        help="then, on the first size's database, this many batches of 10k events in time order (one "
        "5-minute window each, after the data's last): a steady stream once the backlog is in",
    )


def _rows(events_csv: Path, limit: int) -> list[Row]:
    """The file's first rows as raw_events stages them (3 partitions, offsets in file order)."""
    rows: list[Row] = []
    for i, (_line, fields) in enumerate(iter_event_rows(events_csv)):
        if i >= limit:
            break
        ev = parse_event_row(fields)
        rows.append(
            ParsedEvent(ev.timestamp, ev.visitorid, ev.event, ev.itemid, ev.transactionid, 0, i % 3, i // 3)
        )
    return rows


def _fresh_database(admin_url: str, name: str) -> str:
    ensure_database(admin_url, name)  # a new name per load: always created here
    url = with_database(admin_url, name)
    apply_migrations(url)
    return url


def _load(url: str, rows: list[Row], batch_size: int) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")  # the previous size's WAL must not be flushed during this one
    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        for start in range(0, len(rows), batch_size):
            batch = Batch("bench", events=list(rows[start : start + batch_size]))
            load_and_commit(conn, batch)
    return time.perf_counter() - started


def _stream(url: str, rows: list[Row], batches: int, size: int = 10_000) -> list[float]:
    """Seconds per batch of a time-ordered stream after the backlog: each batch is `size` of the rows' visitors
    and items again, with timestamps inside one new 5-minute window and new offsets."""
    window = (max(r.timestamp for r in rows) // WINDOW_MS + 1) * WINDOW_MS
    offset = max(r.offset for r in rows) + 1
    seconds = []
    with psycopg.connect(url) as conn:
        for b in range(batches):
            start = window + b * WINDOW_MS
            events = [
                r._replace(
                    timestamp=start + k * (WINDOW_MS // size), partition=0, offset=offset + b * size + k
                )
                for k, r in enumerate(rows[b * size : (b + 1) * size])
            ]
            started = time.perf_counter()
            load_and_commit(conn, Batch("bench", events=events))
            seconds.append(time.perf_counter() - started)
    return seconds


def _peer_copy(url: str, rows: list[Row]) -> float:
    with psycopg.connect(url) as conn:
        conn.execute(
            "CREATE TABLE peer (ts bigint, visitorid bigint, event text, itemid bigint, transactionid bigint, "
            "produced_ms bigint, kafka_partition integer, kafka_offset bigint)"
        )
        conn.commit()
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy("COPY peer FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(("int8", "int8", "text", "int8", "int8", "int8", "int4", "int8"))
            for row in rows:
                copy.write_row(row)
        conn.commit()
        return time.perf_counter() - started


def run(args: argparse.Namespace) -> int:
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    rows = _rows(_dataset(args.scale, args.seed), args.rows)
    data_dir = Path(tempfile.mkdtemp(prefix="bench-loading-"))
    base = StackConfig.from_env({})
    cfg = base.with_data_dir(data_dir, Ports(*(free_port() for _ in dataclasses.fields(Ports))))
    server = EmbeddedPostgres(cfg)
    server.start()
    try:
        admin = with_database(cfg.database_url, "postgres")
        # A size given twice is measured twice (alternate the sizes to see the machine's drift).
        urls = [_fresh_database(admin, f"load_{k}_{size}") for k, size in enumerate(sizes)]
        results = [(size, _load(url, rows, size)) for url, size in zip(urls, sizes, strict=True)]
        stream = _stream(urls[0], rows, args.stream_batches)
        peer = _peer_copy(_fresh_database(admin, "peer"), rows)
    finally:
        server.stop()
    print()
    print("== bench/loading ==")
    print(f"{len(rows):,} events of the {args.scale} dataset in file order, one transaction per batch")
    for size, seconds in results:
        print(
            f"  batch {size:>9,}: {seconds:6.1f} s  {len(rows) / seconds:>9,.0f} rows/s  "
            f"({seconds / peer:.0f}x the peer)"
        )
    print(f"  peer: one COPY into an unindexed table: {peer:.1f} s ({len(rows) / peer:,.0f} rows/s)")
    if stream:
        print(
            f"then {len(stream)} batches of 10,000 events in time order (one 5-minute window each) into the "
            f"{len(rows):,} rows: median {statistics.median(stream):.3f} s, max {max(stream):.3f} s per batch"
        )
    return 0
