"""bench/shoppers: what one sessions step (shopper_analytics) costs per run, at two history sizes 10x apart.

On an embedded PostgreSQL with the real schema, each history (the generated dataset's first N events in time
order, loaded by the real loading transaction in batches with a sessions step after each) is followed by the
same runs: the next events in time order, `--run-events` per run (a second at 2,000 events/s), each loaded
and then applied by `update_sessions`. A step's cost should follow the run, not the history: the ratio of
the two histories' medians is the figure. Peer from the same runs: the loading transaction of the same
events (the ingest step a run pays anyway).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import psycopg

from bench.pipeline import _dataset
from clickstream_dagster.analytics.sessions.update import check_sessions, update_sessions
from clickstream_dagster.events import ParsedEvent
from clickstream_dagster.ingestion.loader import load_and_commit
from clickstream_dagster.ingestion.reader import Batch
from clickstream_dagster.sql.migrate import apply_migrations
from clickstream_dagster.stack.config import Ports, StackConfig, with_database
from clickstream_dagster.stack.postgres import EmbeddedPostgres, ensure_database
from clickstream_dagster.stack.process import free_port

TOPIC = "bench"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", default="full", help="generated dataset scale (default: full)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--histories", default="100000,1000000", help="history sizes in events, comma-separated"
    )
    parser.add_argument("--runs", type=int, default=30, help="runs measured after each history")
    parser.add_argument("--run-events", type=int, default=2_000, help="new events per run")


def _events(csv: Path, limit: int) -> pd.DataFrame:
    frame = pd.read_csv(csv, usecols=["timestamp", "visitorid", "event", "itemid"])
    return frame.sort_values("timestamp", kind="stable").head(limit).reset_index(drop=True)


def _batch(frame: pd.DataFrame, first_offset: int) -> Batch:
    rows = frame[["timestamp", "visitorid", "event", "itemid"]].itertuples(index=False)
    return Batch(
        TOPIC,
        [
            ParsedEvent(
                int(t), int(v), str(e), int(i), 1 if e == "transaction" else None, -1, 0, first_offset + k
            )
            for k, (t, v, e, i) in enumerate(rows)
        ],
    )


@dataclasses.dataclass
class Result:
    history: int
    sessions: int
    step_ms: list[float]
    load_ms: list[float]
    reread: int  # events the measured steps re-read (new ones and their sessions' neighbours)


def _measure(url: str, events: pd.DataFrame, history: int, runs: int, run_events: int) -> Result:
    with psycopg.connect(url, autocommit=True) as conn:
        for lo in range(0, history, 100_000):
            load_and_commit(conn, _batch(events.iloc[lo : min(lo + 100_000, history)], lo))
            update_sessions(conn)
        sessions_row = conn.execute("SELECT sessions FROM session_totals").fetchone()
        step_ms, load_ms, reread = [], [], 0
        for k in range(runs):
            lo = history + k * run_events
            batch = _batch(events.iloc[lo : lo + run_events], lo)
            started = time.perf_counter()
            load_and_commit(conn, batch)
            loaded = time.perf_counter()
            step = update_sessions(conn)
            done = time.perf_counter()
            load_ms.append((loaded - started) * 1000)
            step_ms.append((done - loaded) * 1000)
            reread += step.events_read
        check = check_sessions(conn, step.visitors)
        assert check.events_in_one_session and check.retention_adds_up, check
    return Result(history, int(sessions_row[0]) if sessions_row else 0, step_ms, load_ms, reread)


def run(args: argparse.Namespace) -> int:
    histories = [int(h) for h in args.histories.split(",")]
    events = _events(_dataset(args.scale, args.seed), max(histories) + args.runs * args.run_events)
    data_dir = Path(tempfile.mkdtemp(prefix="bench-shoppers-"))
    cfg = StackConfig.from_env({}).with_data_dir(
        data_dir, Ports(*(free_port() for _ in dataclasses.fields(Ports)))
    )
    server = EmbeddedPostgres(cfg)
    server.start()
    results = []
    try:
        admin = with_database(cfg.database_url, "postgres")
        for k, history in enumerate(histories):
            name = f"shoppers_{k}_{history}"
            ensure_database(admin, name)
            url = with_database(admin, name)
            apply_migrations(url)
            print(
                f"history of {history:,} events, then {args.runs} runs of {args.run_events:,} ...", flush=True
            )
            results.append(_measure(url, events, history, args.runs, args.run_events))
    finally:
        server.stop()
    print("\n== bench/shoppers ==")
    for r in results:
        print(
            f"history {r.history:>9,} events ({r.sessions:,} sessions): sessions step per run of "
            f"{args.run_events:,} events median {statistics.median(r.step_ms):.1f} ms, max {max(r.step_ms):.1f} ms "
            f"({r.reread / len(r.step_ms):,.0f} events re-read per run); peer, the loading transaction of the "
            f"same events: median {statistics.median(r.load_ms):.1f} ms"
        )
    small, large = results[0], results[-1]
    growth = statistics.median(large.step_ms) / statistics.median(small.step_ms)
    peer = statistics.median(large.load_ms) / statistics.median(small.load_ms)
    print(
        f"incremental cost: history {small.history:,} -> {large.history:,} events "
        f"({large.history / small.history:.0f}x): sessions step {growth:.2f}x, loading transaction {peer:.2f}x"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench shoppers")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
