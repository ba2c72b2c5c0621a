"""bench/soak: the embedded stack driven at a steady rate for a fixed time (default 10,000 events/s for 600 s).

Records, while the producer runs at the rate:
- consumer lag every 2 s: offsets in the topic (up to each partition's last stable offset) that no ledger
  range covers yet, p50 / p95 / max, against two runs' worth (2 x the sensor's 500,000 events per run);
- freshness: per event, produce time (Kafka CreateTime) to the materialization of windowed_stats in the run
  that ingested it, p50 / p95 / max;
- what a leak would show in: the JVMs' heap in use after a full GC, PostgreSQL's private memory (USS) and the
  Python processes' PSS, at the start and at the end;
- the memory of every long-lived process of the stack (Kafka, PostgreSQL's postmaster tree, Spark Connect,
  the Dagster code server, webserver and daemon, the API and the dashboard) right after `up`, at the start
  (after a warm-up: a third of the run by default, while JVM heaps and PostgreSQL's buffers fill) and at the
  end: RSS, and PSS (shared pages counted once), whose growth from start to end is the figure judged;
- the final recount from Kafka's side: every message a plain read_committed consumer gets from the topic is
  stored or quarantined exactly once (lost = in the topic but not stored; doubled = stored twice).
Peer from the same run: the producer's own achieved rate, and a plain consumer reading the soak's messages
back (what Kafka alone delivers on this machine), beside the pipeline's ingest rate.

Prints one line of the form recorded in bench/README.md:
    soak: R events/s for S s, lag p95 L messages, max M, RSS growth G %, lost 0, doubled 0
(G is the largest PSS growth of any process from the start to the end, after the warm-up.)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import threading
import time
import uuid

import confluent_kafka
import psutil
import psycopg

from bench.pipeline import LATENCY_SQL, _dataset, _materializations, _running_stack, _wait_caught_up
from bench.pipeline import stack_roots as _stack_roots
from clickstream_dagster.clients.kafka import KafkaClient
from clickstream_dagster.producer.replay import Replayer, ReplayOptions
from clickstream_dagster.stack.config import StackConfig

COVERED_SQL = """
SELECT kafka_partition, coalesce(sum(end_offset - start_offset), 0) FROM ingested_ranges
WHERE kafka_topic = %s GROUP BY 1
"""
EVENTS_PER_RUN = 500_000  # the sensor's default max_events_per_run


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1)))] if ordered else 0.0


class LagSampler:
    """Every `interval` s: offsets produced (last stable offsets) minus offsets the ledger covers."""

    def __init__(self, cfg: StackConfig, interval: float = 2.0) -> None:
        self.cfg = cfg
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.kafka = KafkaClient(bootstrap_servers=cfg.bootstrap_servers, topic=cfg.topic)

    def __enter__(self) -> LagSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with psycopg.connect(self.cfg.database_url, autocommit=True) as conn:
            while not self._stop.wait(self.interval):
                with contextlib.suppress(Exception):
                    ends = self.kafka.end_offsets()
                    covered: dict[int, int] = {
                        int(p): int(n) for p, n in conn.execute(COVERED_SQL, (self.cfg.topic,)).fetchall()
                    }
                    lag = sum(max(0, end - covered.get(p, 0)) for p, end in ends.items())
                    self.samples.append((time.monotonic(), lag))


def _long_lived(cfg: StackConfig) -> dict[str, psutil.Process]:
    out = {}
    for name, pid in _stack_roots(cfg).items():
        with contextlib.suppress(psutil.Error):
            out[name] = psutil.Process(pid)
    return out


def _memory(procs: dict[str, psutil.Process]) -> dict[str, tuple[int, int]]:
    """(RSS, PSS) per component: the process itself, plus its children for PostgreSQL (one backend per
    connection). PSS counts shared pages once, split between the processes that map them: summed RSS counts
    PostgreSQL's 1 GB of shared buffers again in every backend that touched them."""
    out = {}
    for name, proc in procs.items():
        with contextlib.suppress(psutil.Error):
            tree = [proc, *proc.children(recursive=True)] if name == "postgres" else [proc]
            rss = pss = 0
            for p in tree:
                with contextlib.suppress(psutil.Error):
                    info = p.memory_full_info()
                    rss += info.rss
                    pss += info.pss
            out[name] = (rss, pss)
    return out


JVMS = ("kafka", "spark-connect")


def _retained(procs: dict[str, psutil.Process]) -> dict[str, int]:
    """What a leak would show in, per component: for the JVMs the heap still in use after a full GC (`jcmd
    GC.run`, then `GC.heap_info`), which grows towards -Xmx without any leak; for PostgreSQL the private memory
    (USS) of the postmaster and its backends, leaving out its fixed-size shared buffers as they fill; for the
    Python processes their PSS."""
    out: dict[str, int] = {}
    for name, proc in procs.items():
        with contextlib.suppress(psutil.Error, OSError, subprocess.SubprocessError, ValueError):
            if name in JVMS:
                subprocess.run(["jcmd", str(proc.pid), "GC.run"], capture_output=True, check=True, timeout=60)
                info = subprocess.run(
                    ["jcmd", str(proc.pid), "GC.heap_info"],
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=60,
                ).stdout
                match = re.search(r"heap\s+total \d+K, used (\d+)K", info)
                if match:
                    out[name] = int(match.group(1)) * 1024
            elif name == "postgres":
                tree = [proc, *proc.children(recursive=True)]
                out[name] = sum(p.memory_full_info().uss for p in tree if p.is_running())
            else:
                out[name] = proc.memory_full_info().pss
    return out


def _recount(cfg: StackConfig) -> tuple[int, int, int, float]:
    """(messages in the topic, lost, doubled, seconds a plain consumer took to read them all)."""
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": cfg.bootstrap_servers,
            "group.id": f"soak-recount-{uuid.uuid4().hex[:6]}",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 64 * 1024 * 1024,
        }
    )
    partitions = cfg.kafka_partitions
    consumer.assign([confluent_kafka.TopicPartition(cfg.topic, p, 0) for p in range(partitions)])
    in_topic: set[tuple[int, int]] = set()
    at_end: set[int] = set()
    started = time.monotonic()
    while len(at_end) < partitions and time.monotonic() - started < 900:
        for msg in consumer.consume(50_000, 1.0):
            err = msg.error()
            if err is not None:
                if err.code() == confluent_kafka.KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())  # type: ignore[arg-type]
                continue
            in_topic.add((msg.partition(), msg.offset()))  # type: ignore[arg-type]
    read_s = time.monotonic() - started
    consumer.close()
    with psycopg.connect(cfg.database_url) as conn:
        rows = conn.execute(
            "SELECT kafka_partition, kafka_offset FROM clickstream_events WHERE kafka_topic = %s "
            "UNION ALL SELECT kafka_partition, kafka_offset FROM quarantine "
            "WHERE kafka_topic = %s AND replayed_at IS NULL",
            (cfg.topic, cfg.topic),
        ).fetchall()
    stored = [(int(p), int(o)) for p, o in rows]
    doubled = len(stored) - len(set(stored))
    lost = len(in_topic - set(stored))
    return len(in_topic), lost, doubled, read_s


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=int, default=10_000, help="events/s")
    parser.add_argument("--seconds", type=int, default=600, help="how long the producer runs at the rate")
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="seconds before the start memory is taken [default: a third of --seconds]",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the stack's data folder")


def run(args: argparse.Namespace) -> int:
    n = args.rate * args.seconds
    events_csv = _dataset(str(n), args.seed)
    print(f"machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB; {n:,} events")
    with _running_stack(args.keep) as cfg:
        kafka = KafkaClient(bootstrap_servers=cfg.bootstrap_servers, topic=cfg.topic)
        procs = _long_lived(cfg)
        mem_up = _memory(procs)
        since = time.time()
        mem_start: dict[str, tuple[int, int]] = {}
        warmup = args.warmup if args.warmup is not None else args.seconds // 3

        kept_start: dict[str, int] = {}

        def take_start_memory() -> None:
            time.sleep(warmup)
            mem_start.update(_memory(procs))
            kept_start.update(_retained(procs))

        starter = threading.Thread(target=take_start_memory, daemon=True)
        print(f"soak: {args.rate:,} events/s for {args.seconds} s ...", flush=True)
        with LagSampler(cfg) as lag:
            starter.start()
            t0 = time.monotonic()
            summary = Replayer(
                kafka,
                ReplayOptions(
                    path=events_csv, topic=cfg.topic, messages_per_second=args.rate, batch_size=1000
                ),
                progress=False,
            ).run()
            produced_s = time.monotonic() - t0
            starter.join()
            mem_end = _memory(procs)
            kept_end = _retained(procs)
            done = _wait_caught_up(cfg, summary.sent, timeout_s=1800)
        drain_s = done - t0 - produced_s
        during = [float(v) for t, v in lag.samples if t - t0 <= produced_s]
        materialized = _materializations(cfg, "windowed_stats")
        with psycopg.connect(cfg.database_url) as conn:
            rows = conn.execute(LATENCY_SQL, (cfg.topic, since)).fetchall()
        fresh = [materialized[run] - float(ts) for ts, run in rows if run in materialized]
        total, lost, doubled, read_s = _recount(cfg)

    growth = {
        name: 100.0 * (mem_end[name][1] - mem_start[name][1]) / mem_start[name][1]
        for name in mem_start
        if name in mem_end and mem_start[name][1]
    }
    worst = max(growth.values()) if growth else 0.0
    kept_growth = {
        name: 100.0 * (kept_end[name] - kept_start[name]) / kept_start[name]
        for name in kept_start
        if name in kept_end and kept_start[name]
    }
    lag_p50, lag_p95, lag_max = statistics.median(during), _pct(during, 0.95), max(during)
    print()
    print("== bench/soak ==")
    print(
        f"producer: {summary.sent:,} events in {produced_s:.1f} s = {summary.sent / produced_s:,.0f} events/s "
        f"(target {args.rate:,}); the pipeline caught up {drain_s:.1f} s after the last one"
    )
    print(
        f"lag (offsets produced, not yet in the ledger; {len(during)} samples every 2 s): p50 {lag_p50:,.0f}, "
        f"p95 {lag_p95:,.0f}, max {lag_max:,.0f} (bound: two runs' worth = {2 * EVENTS_PER_RUN:,})"
    )
    print(
        f"freshness (produce -> window visible, {len(fresh):,} events): p50 {statistics.median(fresh):.1f} s, "
        f"p95 {_pct(fresh, 0.95):.1f} s, max {max(fresh):.1f} s"
    )
    print(
        f"peer, same run: a plain read_committed consumer read the {total:,} messages back in {read_s:.1f} s "
        f"({total / read_s:,.0f} messages/s)"
    )
    mib = 2**20
    print(
        f"memory per process, MiB, RSS / PSS: after up, at the start ({warmup} s in), at the end; PSS growth"
    )
    for name in sorted(mem_start):
        up, start, end = mem_up.get(name, (0, 0)), mem_start[name], mem_end.get(name, (0, 0))
        print(
            f"  {name:<22} {up[0] / mib:7.0f} / {up[1] / mib:<7.0f} {start[0] / mib:7.0f} / {start[1] / mib:<7.0f} "
            f"{end[0] / mib:7.0f} / {end[1] / mib:<7.0f} {growth.get(name, 0.0):+7.1f} %"
        )
    print("retained memory (JVM heap used after a full GC; PostgreSQL private memory, USS; others PSS), MiB:")
    for name in sorted(kept_start):
        print(
            f"  {name:<22} {kept_start[name] / mib:8.0f} -> {kept_end.get(name, 0) / mib:8.0f}"
            f" {kept_growth.get(name, 0.0):+7.1f} %"
        )
    print(f"recount from Kafka's side: {total:,} messages in the topic, lost {lost}, doubled {doubled}")
    print()
    print(
        f"soak: {summary.sent / produced_s:,.0f} events/s for {args.seconds} s, lag p95 {lag_p95:,.0f} messages, "
        f"max {lag_max:,.0f}, RSS growth {worst:.1f} %, lost {lost}, doubled {doubled}"
    )
    ok = lost == 0 and doubled == 0 and lag_max <= 2 * EVENTS_PER_RUN and worst <= 10.0
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench soak")
    add_arguments(parser)
    return run(parser.parse_args(argv))
