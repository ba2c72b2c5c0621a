"""bench/session: live-session freshness, the time from producing a visitor's new view to the API's answer for
that visitor changing, on the whole embedded stack under a steady load.

One run:
1. The whole stack on free ports in a temporary folder (bench/pipeline.py's helpers: Kafka, PostgreSQL, Spark
   Connect, the Dagster webserver and daemon with the Kafka sensor, the API, the dashboard).
2. A real model (bench/api.py's helpers: generated events, LightFM, its serving rows and a promoted registry
   row) written into the stack's events database; the running API takes it over within its version TTL.
3. A steady --rate events/s into Kafka (the producer, as `clickstream produce --messages-per-second`), which the
   sensor turns into `ingest_events` runs.
4. Probes, one every --interval seconds while the load runs, alternately for a brand-new visitor and for a
   visitor the model knows: the answer is read, one view of a catalogue item is produced (event time now,
   acknowledged by Kafka), then the API and clickstream_events are polled every --poll seconds until the
   answer follows the view: source `session`, led by a neighbour of the viewed item. (The replayed events
   are from 2015, so the probe's view starts a session of its own; a replayed event of a known visitor can
   change their answer too, but not to the viewed item's neighbours.) Measured per probe from the produce
   call: when the view is visible in clickstream_events (the pipeline's share: sensor tick, run launch,
   load) and when the answer followed it (that plus the API's share).

Runs its own stack; it never touches the stack of `make up`.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import psutil
import psycopg

from bench.api import load, train
from bench.pipeline import _dataset, _running_stack
from clickstream_dagster.clients.kafka import KafkaClient
from clickstream_dagster.messages import encode_key, encode_value
from clickstream_dagster.producer.replay import Replayer, ReplayOptions, ReplaySummary
from clickstream_dagster.stack.config import StackConfig

VISIBLE_SQL = "SELECT 1 FROM clickstream_events WHERE visitorid = %s AND event = 'view' AND itemid = %s"
INGESTED_SQL = "SELECT coalesce(sum(event_count), 0) FROM event_totals"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=int, default=2000, help="steady events/s into Kafka")
    parser.add_argument("--seconds", type=int, default=180, help="duration of the steady load")
    parser.add_argument("--probes", type=int, default=30, help="probes to run (at least 20 are required)")
    parser.add_argument("--interval", type=float, default=4.0, help="seconds between probe starts")
    parser.add_argument("--poll", type=float, default=0.05, help="seconds between polls of a probe")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="a probe's answer must change within this"
    )
    parser.add_argument("--train-events", type=int, default=100_000, help="generated events of the model")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--keep", action="store_true", help="keep the stack's data folder")


@dataclass
class Probe:
    kind: str  # "new" or "known" visitor
    visitor: int
    item: int
    before: str  # the answer's source before the view
    visible_s: float | None = None  # produce -> the view in clickstream_events
    changed_s: float | None = None  # produce -> the API's answer follows the view
    error: str | None = None


def _answer(client: httpx.Client, visitor: int) -> dict:
    r = client.get(f"/recommendations/{visitor}", params={"k": 10})
    r.raise_for_status()
    body: dict = r.json()
    return body


def _probe(
    cfg: StackConfig, kafka: KafkaClient, probe: Probe, neighbours: list[int], args: argparse.Namespace
) -> None:
    try:
        _measure(cfg, kafka, probe, neighbours, args)
    except Exception as exc:  # reported with the figures, not lost in a thread
        probe.error = f"{type(exc).__name__}: {exc}"


def _measure(
    cfg: StackConfig, kafka: KafkaClient, probe: Probe, neighbours: list[int], args: argparse.Namespace
) -> None:
    with (
        httpx.Client(base_url=cfg.api_url, timeout=10) as client,
        psycopg.connect(cfg.database_url, autocommit=True) as conn,
        kafka.producer(linger_ms=0) as producer,
    ):
        before = _answer(client, probe.visitor)
        probe.before = before["source"]
        value = encode_value(int(time.time() * 1000), probe.visitor, "view", probe.item, None)
        started = time.monotonic()
        producer.send(cfg.topic, key=encode_key(probe.visitor), value=value).get(timeout=30)
        while (elapsed := time.monotonic() - started) < args.timeout:
            if probe.visible_s is None and conn.execute(VISIBLE_SQL, (probe.visitor, probe.item)).fetchone():
                probe.visible_s = elapsed
            body = _answer(client, probe.visitor)
            if body["source"] == "session" and body["items"] and body["items"][0]["itemid"] in neighbours:
                probe.changed_s = time.monotonic() - started
                if probe.visible_s is None:
                    probe.visible_s = probe.changed_s
                return
            time.sleep(args.poll)


def _pct(values: list[float], p: float) -> float:
    """The same rank rule as bench/pipeline.py's figures."""
    ordered = sorted(values)
    return ordered[int(p * (len(ordered) - 1))]


def _line(label: str, values: list[float]) -> str:
    if not values:
        return f"    {label:<44} (none)"
    return (
        f"    {label:<44} p50 {statistics.median(values):5.1f} s   p95 {_pct(values, 0.95):5.1f} s   "
        f"max {max(values):5.1f} s   ({len(values)} probes)"
    )


def run(args: argparse.Namespace) -> int:
    replay_csv = _dataset(str(args.rate * args.seconds), args.seed + 1)
    replayed_max = int(pd.read_csv(replay_csv, usecols=["visitorid"])["visitorid"].max())
    print(f"machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB", flush=True)
    probes: list[Probe] = []
    replay: dict[str, ReplaySummary] = {}
    with tempfile.TemporaryDirectory(prefix="bench-session-") as tmp, _running_stack(args.keep) as cfg:
        rows = train(args.train_events, args.seed, Path(tmp) / "data")
        version = load(cfg.database_url, rows)
        with httpx.Client(base_url=cfg.api_url, timeout=5) as client:
            deadline = time.monotonic() + 30
            while client.get("/health").json().get("model_version") != version:
                assert time.monotonic() < deadline, "the API did not take the bench's model over"
                time.sleep(0.2)
        similar: dict[int, list[int]] = {}
        pairs = zip(rows.similar["itemid"].tolist(), rows.similar["similar_itemid"].tolist(), strict=True)
        for item, neighbour in pairs:
            similar.setdefault(int(item), []).append(int(neighbour))
        rng = random.Random(args.seed)
        items = [i for i, n in similar.items() if len(n) >= 10]
        rng.shuffle(items)
        known = [int(v) for v in rows.recommendations["visitorid"].unique()]
        rng.shuffle(known)
        fresh = max(replayed_max, int(rows.events["visitorid"].max())) + 1_000_000
        print(
            f"model {version} served: {len(similar):,} items with neighbours, {len(known):,} known visitors",
            flush=True,
        )

        kafka = KafkaClient(bootstrap_servers=cfg.bootstrap_servers, topic=cfg.topic)
        options = ReplayOptions(
            path=replay_csv,
            topic=cfg.topic,
            messages_per_second=args.rate,
            batch_size=200,
            partitions=cfg.kafka_partitions,
        )
        load_thread = threading.Thread(
            target=lambda: replay.setdefault("summary", Replayer(kafka, options, progress=False).run()),
            daemon=True,
        )
        print(
            f"steady load: {args.rate:,} events/s for {args.seconds} s; probes every {args.interval} s",
            flush=True,
        )
        load_started = time.monotonic()
        load_thread.start()
        with psycopg.connect(cfg.database_url, autocommit=True) as conn:  # the sensor's first runs are in
            while (conn.execute(INGESTED_SQL).fetchone() or (0,))[0] < args.rate:
                assert time.monotonic() - load_started < 120, "nothing ingested after 120 s"
                time.sleep(0.5)
        threads: list[threading.Thread] = []
        while len(probes) < args.probes and load_thread.is_alive():
            n = len(probes)
            kind = "new" if n % 2 == 0 else "known"
            visitor = fresh + n if kind == "new" else known[n // 2]
            item = items[n]
            probe = Probe(kind, visitor, item, before="")
            probes.append(probe)
            thread = threading.Thread(
                target=_probe, args=(cfg, kafka, probe, similar[item], args), daemon=True
            )
            thread.start()
            threads.append(thread)
            time.sleep(args.interval)
        for thread in threads:
            thread.join(args.timeout + 30)
        load_thread.join()
        load_s = time.monotonic() - load_started

    summary = replay.get("summary")
    done = [p for p in probes if p.changed_s is not None]
    print()
    print("== bench/session ==")
    print(
        f"load: {summary.sent if summary else 0:,} events produced in {load_s:.0f} s "
        f"({(summary.sent if summary else 0) / load_s:,.0f} events/s) while {len(probes)} probes ran"
    )
    for kind in ("new", "known"):
        of_kind = [p for p in done if p.kind == kind]
        before = sorted({p.before for p in of_kind})
        print(f"  {kind} visitors (answers before the view: {', '.join(before)}; after: session):")
        print(_line("produce -> view visible in clickstream_events", [p.visible_s or 0.0 for p in of_kind]))
        print(_line("produce -> the API's answer follows the view", [p.changed_s or 0.0 for p in of_kind]))
    changed = [p.changed_s or 0.0 for p in done]
    visible = [p.visible_s or 0.0 for p in done]
    print("  all probes:")
    print(_line("produce -> view visible in clickstream_events", visible))
    print(_line("produce -> the API's answer follows the view", changed))
    api_share = [(p.changed_s or 0.0) - (p.visible_s or 0.0) for p in done]
    if api_share:
        print(
            f"    the API's share (changed - visible): p50 {statistics.median(api_share):.2f} s, max {max(api_share):.2f} s"
        )
    failed = [p for p in probes if p.changed_s is None]
    print(f"  not following the view within {args.timeout:.0f} s: {len(failed)}")
    for p in failed[:5]:
        print(f"    {p.kind} visitor {p.visitor}, item {p.item}: {p.error or 'no change'}")
    ok = len(done) >= 20 and not failed and _pct(changed, 0.95) <= 15.0
    print(f"target p95 <= 15 s over >= 20 probes: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench session")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
