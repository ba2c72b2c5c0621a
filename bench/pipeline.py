"""bench/pipeline: the whole embedded stack, driven the way users run it (producer -> Kafka -> daemon sensor ->
Dagster runs -> PostgreSQL + Spark Connect).

(a) throughput: the full generated dataset replayed unthrottled; wall time from the first message produced
    until every row is in clickstream_events and windowed_stats is complete. Peer from the same run: the
    floor for loading the same rows, a single COPY of events.csv into an unindexed table plus one SQL GROUP BY
    for the windows.
(b) latency: a steady rate for a while; per event, the time from produce (Kafka CreateTime) to the
    materialization of windowed_stats in the run that ingested it (that step reads the event's window after
    the event committed), p50/p95.
(c) peak memory (RSS) of the whole stack: Kafka, PostgreSQL, Spark Connect, Dagster webserver, daemon and
    run workers, sampled every 0.5 s.
Also printed: where each run's time went (Dagster's event log) and the CPU seconds each process tree of the
stack used during (a) and (b), to show what the 2 cores were busy with.

Runs its own stack on free ports in a temporary folder; it never touches the stack of `make up`.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import dataclasses
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import psycopg

from clickstream_dagster.clients.kafka import KafkaClient
from clickstream_dagster.data.generator import generate, parse_scale
from clickstream_dagster.producer.replay import Replayer, ReplayOptions
from clickstream_dagster.stack.cluster import ClusterRehearsal
from clickstream_dagster.stack.config import Ports, StackConfig, project_root
from clickstream_dagster.stack.manager import Stack
from clickstream_dagster.stack.process import free_port

LATENCY_SQL = """
SELECT extract(epoch FROM e.produced_at) AS produced, r.dagster_run_id
FROM clickstream_events e
JOIN ingested_ranges r
  ON r.kafka_topic = e.kafka_topic AND r.kafka_partition = e.kafka_partition
 AND e.kafka_offset >= r.start_offset AND e.kafka_offset < r.end_offset
WHERE e.kafka_topic = %s AND e.produced_at >= to_timestamp(%s)
"""

PEER_SQL = [
    "DROP TABLE IF EXISTS bench_peer_events",
    """CREATE UNLOGGED TABLE bench_peer_events (
           "timestamp" bigint, visitorid bigint, event text, itemid bigint, transactionid double precision)""",
]
PEER_COPY = "COPY bench_peer_events FROM STDIN (FORMAT csv, HEADER true)"
PEER_WINDOWS = """
SELECT count(*) FROM (
    SELECT floor("timestamp" / 300000.0), event, count(*), count(DISTINCT visitorid), count(DISTINCT itemid)
    FROM bench_peer_events GROUP BY 1, 2) w
"""


def stack_roots(cfg: StackConfig) -> dict[str, int]:
    """The processes the stack started, by name (their pid files), and PostgreSQL's postmaster."""
    pid_files = {f.stem: f for f in cfg.run_dir.glob("*.pid")}
    pid_files |= {f"cluster/{f.stem}": f for f in (cfg.data_dir / "cluster" / "run").glob("*.pid")}
    pid_files["postgres"] = cfg.postgres_data_dir / "postmaster.pid"
    roots = {}
    for name, f in pid_files.items():
        with contextlib.suppress(OSError, ValueError, IndexError):
            roots[name] = int(f.read_text().split()[0])
    return roots


def _tree(root: int) -> list[psutil.Process]:
    """A process and all its descendants (none if it has ended)."""
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(root)
        return [proc, *proc.children(recursive=True)]
    return []


def _processes(roots: Iterable[int]) -> Iterator[psutil.Process]:
    """Every process of these trees, once."""
    seen: set[int] = set()
    for root in roots:
        for p in _tree(root):
            if p.pid not in seen:
                seen.add(p.pid)
                yield p


class MemorySampler:
    """Peak summed RSS of the stack: every process the stack started (pid files), PostgreSQL's postmaster, and
    all their descendants (Dagster's run workers, Spark's Python workers, Postgres backends)."""

    def __init__(self, cfg: StackConfig) -> None:
        self.cfg = cfg
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _roots(self) -> list[int]:
        return list(stack_roots(self.cfg).values())

    def _sample(self) -> int:
        total = 0
        for p in _processes(self._roots()):
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total

    def rss_and_pss_now(self) -> tuple[int, int]:
        """Summed RSS and PSS right now. RSS counts a shared page once per process that maps it (PostgreSQL's
        shared buffers once per backend); PSS splits it among them. Too costly to sample every 0.5 s."""
        rss = pss = 0
        for p in _processes(self._roots()):
            with contextlib.suppress(psutil.Error):
                info = p.memory_full_info()
                rss += info.rss
                pss += info.pss
        return rss, pss

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._sample())
            self._stop.wait(0.5)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class CpuMeter:
    """CPU seconds used by each part of the stack between two snapshots: for each process the stack started
    (pid files) and PostgreSQL's postmaster, its own time, its live descendants' and that of every descendant
    that ended (counted in its parent's children times once reaped: Postgres backends, Dagster runs)."""

    def __init__(self, roots: Callable[[], dict[str, int]]) -> None:
        self._roots = roots

    def snapshot(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for name, root in self._roots().items():
            seconds = 0.0
            for p in _tree(root):
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    seconds += t.user + t.system + t.children_user + t.children_system
            totals[name] = seconds
        return totals

    @staticmethod
    def report(before: dict[str, float], after: dict[str, float], producer_s: float, wall_s: float) -> str:
        used = {name: after[name] - before.get(name, 0.0) for name in after}
        used["producer (bench process)"] = producer_s
        total = sum(used.values())
        lines = [
            f"      {name:28s} {seconds:7.1f} CPU-s  {100 * seconds / total:4.0f}%"
            for name, seconds in sorted(used.items(), key=lambda kv: -kv[1])
        ]
        lines.append(
            f"      {'total':28s} {total:7.1f} CPU-s  = {total / wall_s:.2f} of {os.cpu_count()} cores "
            f"over {wall_s:.1f} s"
        )
        return "\n".join(lines)


def _dataset(scale: str, seed: int) -> Path:
    folder = project_root() / ".cache" / "bench-data" / f"{scale}-{seed}"
    if not (folder / "events.csv").is_file():
        print(f"generating {scale} dataset (seed {seed}) into {folder} ...", flush=True)
        generate(folder, parse_scale(scale), seed)
    return folder / "events.csv"


def _stack_config(data_dir: Path) -> StackConfig:
    base = StackConfig.from_env(
        {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DATABASE_"))}
    )
    ports = Ports(*(free_port() for _ in dataclasses.fields(Ports)))
    return replace(base.with_data_dir(data_dir, ports), external_spark_remote=None, topic="bench")


def _wait_caught_up(cfg: StackConfig, expected: int, timeout_s: float) -> float:
    """Seconds until clickstream_events + quarantine hold `expected` rows and windowed_stats has applied them."""
    started = time.monotonic()
    last = 0.0
    with psycopg.connect(cfg.database_url, autocommit=True) as conn:
        while time.monotonic() - started < timeout_s:
            # Cheap counters while polling: count(*) over clickstream_events five times a second would itself
            # scan millions of rows (measured: most of PostgreSQL's CPU during (a)). event_totals is kept by
            # the loading transaction, in the same commit as the rows; the table is counted once at the end.
            # windowed_stats (120k rows at full scale) is summed only once nothing is left to apply.
            row = conn.execute(
                """SELECT (SELECT coalesce(sum(event_count), 0) FROM event_totals)
                          + (SELECT count(*) FROM quarantine),
                          (SELECT count(*) FROM window_change_batches)"""
            ).fetchone()
            assert row is not None
            landed, dirty = row
            if landed >= expected and dirty == 0 and _events_in_windows(conn) == landed:
                done = time.monotonic()
                counted = conn.execute(
                    "SELECT (SELECT count(*) FROM clickstream_events) + (SELECT count(*) FROM quarantine)"
                ).fetchone()
                if counted is None or counted[0] != landed:
                    raise AssertionError(f"event_totals say {landed:,} rows, the tables hold {counted}")
                return done
            if time.monotonic() - last > 10:
                last = time.monotonic()
                print(
                    f"    {landed:,}/{expected:,} rows, {dirty:,} batches pending for windowed_stats",
                    flush=True,
                )
            time.sleep(0.2)
    raise TimeoutError(f"pipeline did not catch up with {expected:,} events in {timeout_s:.0f} s")


def _wait_sessions(cfg: StackConfig, expected: int, timeout_s: float) -> float:
    """Monotonic time when the sessions step has applied everything: nothing queued, and the sessions hold
    `expected` events (clickstream_events' count)."""
    started = time.monotonic()
    with psycopg.connect(cfg.database_url, autocommit=True) as conn:
        while time.monotonic() - started < timeout_s:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM session_changes), (SELECT events FROM session_totals)"
            ).fetchone()
            assert row is not None
            if row[0] == 0 and row[1] == expected:
                return time.monotonic()
            time.sleep(0.2)
    raise TimeoutError(f"the sessions did not catch up with {expected:,} events in {timeout_s:.0f} s")


def _stored_events(cfg: StackConfig) -> int:
    with psycopg.connect(cfg.database_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM clickstream_events").fetchone()
    return int(row[0]) if row else 0


def _events_in_windows(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT coalesce(sum(event_count), 0) FROM windowed_stats").fetchone()
    return int(row[0]) if row else 0


def _peer(cfg: StackConfig, events_csv: Path) -> tuple[float, float]:
    with psycopg.connect(cfg.database_url, autocommit=True) as conn:
        for stmt in PEER_SQL:
            conn.execute(stmt)
        t0 = time.monotonic()
        with conn.cursor() as cur, cur.copy(PEER_COPY) as copy, events_csv.open("rb") as f:
            while chunk := f.read(1 << 20):
                copy.write(chunk)
        t1 = time.monotonic()
        conn.execute(PEER_WINDOWS)
        t2 = time.monotonic()
        conn.execute("DROP TABLE bench_peer_events")
    return t1 - t0, t2 - t1


def _step_breakdown(cfg: StackConfig, since: float, until: float) -> str:
    """Median and max seconds per phase of the ingest runs created in [since, until): launch (run created to
    its first step; "worker up" is the part until the run's process reported itself), each step (start to
    end), and the whole run, from Dagster's own event log."""
    import dagster as dg
    from dagster._core.storage.dagster_run import RunsFilter

    os.environ["DAGSTER_HOME"] = str(cfg.dagster_home)
    instance = dg.DagsterInstance.get()
    phases: dict[str, list[float]] = {}
    runs = instance.get_run_records(filters=RunsFilter(job_name="ingest_events"), limit=10_000)
    for record in runs:
        created = record.create_timestamp.timestamp()
        if not since <= created < until or record.end_time is None:
            continue
        starts: dict[str, float] = {}
        for entry in instance.all_logs(record.dagster_run.run_id):
            event = entry.dagster_event
            if event is not None and (event.message or "").startswith("Started process for run"):
                phases.setdefault("launch: worker up", []).append(entry.timestamp - created)
            if event is None or event.step_key is None:
                continue
            if event.event_type_value == "STEP_START":
                starts[event.step_key] = entry.timestamp
            elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and event.step_key in starts:
                phases.setdefault(event.step_key, []).append(entry.timestamp - starts[event.step_key])
        if starts:
            phases.setdefault("launch", []).append(min(starts.values()) - created)
        phases.setdefault("run", []).append(record.end_time - created)
    lines = [
        f"      {name:<28} median {statistics.median(values):6.1f} s   max {max(values):6.1f} s   ({len(values)} runs)"
        for name, values in sorted(phases.items(), key=lambda kv: -statistics.median(kv[1]))
    ]
    return "\n".join(lines)


def _run_timeline(cfg: StackConfig, since: float, until: float) -> str:
    """Each ingest run created in [since, until), in order: its events, and when (seconds after `since`) it
    was created, started its first step, finished raw_events and ended (Dagster's own event log). A run can
    still be finishing its last steps when (a) is complete: another run's windowed_stats applied its rows."""
    import dagster as dg
    from dagster._core.storage.dagster_run import RunsFilter

    os.environ["DAGSTER_HOME"] = str(cfg.dagster_home)
    instance = dg.DagsterInstance.get()
    lines = []
    records = instance.get_run_records(filters=RunsFilter(job_name="ingest_events"), limit=10_000)
    for record in sorted(records, key=lambda r: r.create_timestamp):
        created = record.create_timestamp.timestamp()
        if not since <= created < until:
            continue
        first_step = raw_done = None
        for entry in instance.all_logs(record.dagster_run.run_id):
            event = entry.dagster_event
            if event is None or event.step_key is None:
                continue
            if event.event_type_value == "STEP_START" and first_step is None:
                first_step = entry.timestamp
            if event.event_type_value == "STEP_SUCCESS" and event.step_key == "raw_events":
                raw_done = entry.timestamp
        marks = [
            f"{name} {t - since:6.1f}" if t is not None else f"{name}    -  "
            for name, t in (("created", created), ("first step", first_step), ("raw_events done", raw_done))
        ]
        events = int(record.dagster_run.tags.get("clickstream/events", 0))
        end = f"end {record.end_time - since:6.1f}" if record.end_time is not None else "still running"
        lines.append(f"      {events:>9,} events: " + "   ".join(marks) + f"   {end}")
    return "\n".join(lines)


def _materializations(cfg: StackConfig, asset: str) -> dict[str, float]:
    """run id -> time `asset` was materialized in that run (from Dagster's own event log)."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(cfg.dagster_home)
    instance = dg.DagsterInstance.get()
    records = instance.fetch_materializations(dg.AssetKey(asset), limit=10_000).records
    return {r.run_id: r.timestamp for r in records}


def _sessions_latencies(cfg: StackConfig, rows: list[tuple[float, str]]) -> list[float]:
    """Per event (produced time, ingest run): until the first `sessions` materialization at or after its run's
    raw_events materialization (its commit). A run whose step found another applying materializes nothing;
    that other step takes the queue again before it stops, so the next materialization holds the event."""
    loaded = _materializations(cfg, "raw_events")
    sessions = sorted(_materializations(cfg, "sessions").values())
    out = []
    for produced, run in rows:
        if run not in loaded:
            continue
        k = bisect.bisect_left(sessions, loaded[run])
        if k < len(sessions):
            out.append(sessions[k] - float(produced))
    return sorted(out)


def _percentiles(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), values[int(0.95 * (len(values) - 1))], values[-1]


@contextlib.contextmanager
def _running_stack(keep: bool, cluster: bool = False) -> Iterator[StackConfig]:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    cfg = _stack_config(data_dir)
    rehearsal = ClusterRehearsal(cfg) if cluster else None
    try:
        if rehearsal is not None:
            # The stack against the rehearsal exactly as its environment would configure it (cluster env).
            print(
                "  the scale rehearsal: 3 Kafka brokers, Spark master + 2 workers + Spark Connect ...",
                flush=True,
            )
            rehearsal.start()
            env = rehearsal.env()
            cfg = replace(
                cfg,
                external_kafka=env["KAFKA_BOOTSTRAP_SERVERS"],
                external_spark_remote=env["SPARK_REMOTE"],
                kafka_partitions=int(env["CLICKSTREAM_KAFKA_PARTITIONS"]),
                kafka_replication_factor=int(env["CLICKSTREAM_KAFKA_REPLICATION_FACTOR"]),
            )
        stack = Stack(cfg)
        try:
            stack.up(lambda line: print(line, flush=True))
            yield cfg
        finally:
            stack.down(lambda line: print(line, flush=True))
    finally:
        if rehearsal is not None:
            rehearsal.stop()
        if not keep:
            shutil.rmtree(data_dir, ignore_errors=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", default="full", help="dataset for (a): full, small or N events")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rate", type=int, default=2000, help="events/s for (b)")
    parser.add_argument("--seconds", type=int, default=120, help="duration of (b)")
    parser.add_argument("--keep", action="store_true", help="keep the stack's data folder")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="run against the scale rehearsal (3 Kafka brokers, Spark standalone with 2 workers; docs/deploy.md)",
    )


def run(args: argparse.Namespace) -> int:
    events_csv = _dataset(args.scale, args.seed)
    latency_csv = _dataset(str(args.rate * args.seconds), args.seed + 1)
    n_events = sum(1 for _ in events_csv.open("rb")) - 1
    print(f"machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB")

    print(f"target: {'the scale rehearsal' if args.cluster else 'the embedded stack'}")
    with _running_stack(args.keep, args.cluster) as cfg, MemorySampler(cfg) as memory:
        kafka = KafkaClient(bootstrap_servers=cfg.bootstrap_servers, topic=cfg.topic)
        # (a) throughput
        print(f"(a) replaying {n_events:,} events unthrottled ...", flush=True)
        cpu = CpuMeter(lambda: stack_roots(cfg))
        cpu_before = cpu.snapshot()
        t0 = time.monotonic()
        a_started = time.time()
        producer_cpu = time.process_time()
        summary = Replayer(
            kafka,
            ReplayOptions(path=events_csv, topic=cfg.topic, partitions=cfg.kafka_partitions),
            progress=False,
        ).run()
        producer_cpu = time.process_time() - producer_cpu
        produced = time.monotonic()
        done = _wait_caught_up(cfg, summary.sent, timeout_s=1800)
        wall = done - t0
        a_cpu = CpuMeter.report(cpu_before, cpu.snapshot(), producer_cpu, wall)
        sessions_wall = _wait_sessions(cfg, _stored_events(cfg), timeout_s=1800) - t0
        a_steps = _step_breakdown(cfg, a_started, time.time())
        a_timeline = _run_timeline(cfg, a_started, time.time())
        copy_s, group_s = _peer(cfg, events_csv)

        # (b) latency at a steady rate
        print(f"(b) {args.rate:,} events/s for {args.seconds} s ...", flush=True)
        since = time.time()
        cpu_before, b_started = cpu.snapshot(), time.monotonic()
        producer_cpu = time.process_time()
        rate_summary = Replayer(
            kafka,
            ReplayOptions(path=latency_csv, topic=cfg.topic, messages_per_second=args.rate, batch_size=200),
            progress=False,
        ).run()
        producer_cpu = time.process_time() - producer_cpu
        _wait_caught_up(cfg, summary.sent + rate_summary.sent, timeout_s=600)
        _wait_sessions(cfg, _stored_events(cfg), timeout_s=600)
        b_cpu = CpuMeter.report(cpu_before, cpu.snapshot(), producer_cpu, time.monotonic() - b_started)
        rss_now, pss_now = memory.rss_and_pss_now()
        materialized = _materializations(cfg, "windowed_stats")
        b_steps = _step_breakdown(cfg, since, time.time())
        with psycopg.connect(cfg.database_url) as conn:
            rows = conn.execute(LATENCY_SQL, (cfg.topic, since)).fetchall()
        latencies = sorted(materialized[run] - float(ts) for ts, run in rows if run in materialized)
        session_latencies = _sessions_latencies(cfg, rows)
        runs = {run for _, run in rows}

    p50, p95, _ = _percentiles(latencies)
    s50, s95, smax = _percentiles(session_latencies)
    print()
    print("== bench/pipeline ==")
    print(
        f"(a) {summary.sent:,} events: produced in {produced - t0:.1f} s, all in clickstream_events and "
        f"windowed_stats after {wall:.1f} s  ->  {summary.sent / wall:,.0f} events/s end to end (target <= 90 s)"
    )
    print(
        f"    sessions, funnel and retention (shopper_analytics) caught up after {sessions_wall:.1f} s "
        f"({sessions_wall / wall:.2f}x the windows' time)"
    )
    print(
        f"    peer (same Postgres, same run): COPY of events.csv {copy_s:.1f} s + one SQL window GROUP BY "
        f"{group_s:.1f} s = {copy_s + group_s:.1f} s; pipeline / peer = {wall / (copy_s + group_s):.1f}x"
    )
    print(
        f"(b) {rate_summary.sent:,} events at {args.rate:,}/s over {len(runs)} runs: produce -> window visible "
        f"p50 {p50:.1f} s, p95 {p95:.1f} s, max {latencies[-1]:.1f} s  (target p95 <= 15 s; "
        f"{len(latencies):,} events measured)"
    )
    print(
        f"    beside it, produce -> sessions visible: p50 {s50:.1f} s, p95 {s95:.1f} s, max {smax:.1f} s "
        f"({len(session_latencies):,} events)"
    )
    print(f"    where (a)'s run time went:\n{a_steps}")
    print(f"    (a)'s runs (seconds after the first message):\n{a_timeline}")
    print(f"    (a)'s CPU by process tree:\n{a_cpu}")
    print(f"    where (b)'s run time went:\n{b_steps}")
    print(f"    (b)'s CPU by process tree:\n{b_cpu}")
    print(
        f"(c) peak RSS of the whole stack: {memory.peak_bytes / 2**30:.2f} GiB (summed over processes; at the "
        f"end of (b) summed RSS {rss_now / 2**30:.2f} GiB, PSS {pss_now / 2**30:.2f} GiB: shared memory such as "
        "PostgreSQL's buffers counted once)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench pipeline")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
