"""Producer throughput: our Replayer (kafka-python) against Kafka's own ProducerPerformance, same run.

Both send the same number of records of the same sizes to fresh topics with the same partition count on one
embedded broker started for the benchmark, with the production settings: acks=all, idempotence, and the same
linger, batch size and compression. Our side is the real producer path (`Replayer` over the generated
events.csv, unthrottled) in its own process, so its peak RSS is its own; the topic must then hold exactly one
record per event. The Java side sends real message values read from a payload file, each padded with spaces
to the size of that message's key + value + headers (ProducerPerformance sends neither keys nor headers).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import re
import resource
import signal
import subprocess
import tempfile
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import FrameType
from typing import Any

from clickstream_dagster.clients.kafka import KafkaClient
from clickstream_dagster.data.generator import MARKER_FILE, Scale, generate, parse_scale
from clickstream_dagster.data.readers import EVENTS_FILE, RowError, iter_event_rows, parse_event_row
from clickstream_dagster.messages import HEADER_LINE, HEADER_SOURCE, encode_key, encode_value
from clickstream_dagster.producer.replay import Replayer, ReplayOptions, source_fingerprint
from clickstream_dagster.stack.config import KAFKA_VERSION, Ports, StackConfig
from clickstream_dagster.stack.kafka import EmbeddedKafka, run_tool
from clickstream_dagster.stack.process import free_port

TARGET_MESSAGES_PER_SECOND = 100_000
PAYLOAD_SAMPLE = 100_000  # real messages in the Java tool's payload file (it picks one at random per record)
MIB = 1024 * 1024  # ProducerPerformance's "MB"
JAVA_TIMEOUT_SECONDS = 1800
WARMUP_RECORDS = 1_000_000
STATS_VERSION = 1

_OPTION_DEFAULTS = {f.name: f.default for f in fields(ReplayOptions) if f.name not in ("path", "topic")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", default="full", help="full (2,756,101 events), small (30,000) or a number")
    parser.add_argument("--seed", type=int, default=42, help="generator seed (default: 42)")
    parser.add_argument("--partitions", type=int, default=_OPTION_DEFAULTS["partitions"])
    parser.add_argument("--rounds", type=int, default=1, help="run both tools this many times, fresh topics")
    parser.add_argument(
        "--linger-ms", type=int, default=_OPTION_DEFAULTS["linger_ms"], help="both tools (linger.ms)"
    )
    parser.add_argument(
        "--batch-bytes",
        type=int,
        default=_OPTION_DEFAULTS["kafka_batch_bytes"],
        help="both tools (batch.size)",
    )
    parser.add_argument(
        "--compression", choices=["none", "gzip"], default="none", help="both tools (compression.type)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=_OPTION_DEFAULTS["batch_size"],
        help="Replayer: messages per delivery batch (backpressure unit)",
    )
    parser.add_argument(
        "--max-in-flight-batches",
        type=int,
        default=_OPTION_DEFAULTS["max_in_flight_batches"],
        help="Replayer: delivery batches unacknowledged at most",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="dataset cache (default: .cache/bench-data)"
    )
    parser.add_argument(
        "--public-send",
        action="store_true",
        help="also send the same messages with KafkaProducer.send() per record (kafka-python's public API): "
        "the peer of the Replayer's batch appender, which uses its internals",
    )


# ---- dataset --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    events_csv: Path
    records: int  # valid events, so messages the producer sends
    payload_bytes: int  # key + value + header bytes of all those messages
    payload_file: Path  # real values padded to their message size, for ProducerPerformance

    @property
    def average_bytes(self) -> float:
        return self.payload_bytes / self.records


def prepare_dataset(cache: Path, scale: Scale, seed: int) -> Dataset:
    """Generate the events once per scale and seed; measure the messages once per generated file."""
    folder = cache / f"{scale}-{seed}"
    events = folder / EVENTS_FILE
    if not (folder / MARKER_FILE).is_file() or not events.is_file():
        print(f"generating the {scale} dataset (seed {seed}) into {folder}; later runs reuse it", flush=True)
        generate(folder, scale, seed, overwrite=True)
    stats_file = folder / "bench-messages.txt"
    payload_file = folder / "bench-java-payloads.txt"
    key = f"{STATS_VERSION} {events.stat().st_size} {events.stat().st_mtime_ns}"
    lines = stats_file.read_text().split("\n") if stats_file.is_file() else []
    if len(lines) >= 3 and lines[0] == key and payload_file.is_file():
        return Dataset(events, int(lines[1]), int(lines[2]), payload_file)
    print(f"measuring the messages of {events} (once)", flush=True)
    records, payload_bytes = _measure_messages(events, payload_file, PAYLOAD_SAMPLE)
    stats_file.write_text(f"{key}\n{records}\n{payload_bytes}\n")
    return Dataset(events, records, payload_bytes, payload_file)


def _measure_messages(events: Path, payload_file: Path, sample: int) -> tuple[int, int]:
    """Count the messages and their key + value + header bytes; write the first `sample` as Java payloads."""
    fixed = len(HEADER_SOURCE) + len(source_fingerprint(events)) + len(HEADER_LINE)
    records = total = 0
    with payload_file.open("wb") as out:
        for line_no, row in iter_event_rows(events):
            try:
                ev = parse_event_row(row)
            except RowError:
                continue
            value = encode_value(ev.timestamp, ev.visitorid, ev.event, ev.itemid, ev.transactionid)
            size = len(encode_key(ev.visitorid)) + len(value) + fixed + len(str(line_no))
            records += 1
            total += size
            if records <= sample:  # trailing spaces keep the JSON valid and the size equal
                out.write(value + b" " * (size - len(value)) + b"\n")
    return records, total


# ---- the two producers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    tool: str
    topic: str
    records: int  # acknowledged, by the tool's own count
    seconds: float
    payload_bytes: int
    client_cpu_seconds: float
    broker_cpu_seconds: float
    in_topic: int  # records the topic holds afterwards (end offsets)
    detail: str = ""

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    @property
    def mib_per_second(self) -> float:
        return self.payload_bytes / MIB / self.seconds if self.seconds > 0 else 0.0


def produce_with_kafka_python(
    bootstrap: str, topic: str, events: str, settings: dict[str, Any]
) -> dict[str, Any]:
    """Runs in a child process: the Replayer over events.csv, as `clickstream produce` does."""
    import logging

    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    kafka = KafkaClient(bootstrap_servers=bootstrap, topic=topic)
    options = ReplayOptions(path=Path(events), topic=topic, **settings)
    before = resource.getrusage(resource.RUSAGE_SELF)
    summary = Replayer(kafka, options, progress=False).run()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "read": summary.read,
        "sent": summary.sent,
        "rejected": summary.rejected,
        "failed": summary.failed,
        "first_error": summary.first_error,
        "seconds": summary.seconds,
        "cpu_seconds": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        "max_rss_mib": after.ru_maxrss / 1024,  # kilobytes on Linux
    }


def produce_with_public_send(
    bootstrap: str, topic: str, events: str, settings: dict[str, Any]
) -> dict[str, Any]:
    """Runs in a child process: the same messages (key, value, the resume headers) through kafka-python's
    public API, `KafkaProducer.send()` per record with the Replayer's producer settings: the peer that says
    whether `producer.batches` (kafka-python's internals) still earns its place."""
    import logging
    import time

    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    kafka = KafkaClient(bootstrap_servers=bootstrap, topic=topic)
    fingerprint = source_fingerprint(Path(events)).encode()
    sent = 0
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    with kafka.producer(
        linger_ms=settings["linger_ms"],
        batch_size=settings["kafka_batch_bytes"],
        compression_type=settings["compression"],
        max_block_ms=10 * 60 * 1000,
    ) as producer:
        for line_no, fields_ in iter_event_rows(Path(events)):
            try:
                ev = parse_event_row(fields_)
            except RowError:
                continue
            producer.send(
                topic,
                key=encode_key(ev.visitorid),
                value=encode_value(ev.timestamp, ev.visitorid, ev.event, ev.itemid, ev.transactionid),
                headers=[(HEADER_SOURCE, fingerprint), (HEADER_LINE, str(line_no).encode())],
            )
            sent += 1
        producer.flush()
    seconds = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "sent": sent,
        "seconds": seconds,
        "cpu_seconds": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
    }


def _public_send_round(
    broker: EmbeddedKafka, dataset: Dataset, topic: str, settings: dict[str, Any]
) -> Result:
    cfg = broker.cfg
    broker_cpu = _cpu_seconds(broker)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        out = pool.submit(
            produce_with_public_send, cfg.bootstrap_servers, topic, str(dataset.events_csv), settings
        ).result()
    return Result(
        tool="kafka-python send()",
        topic=topic,
        records=out["sent"],
        seconds=out["seconds"],
        payload_bytes=dataset.payload_bytes * out["sent"] // max(dataset.records, 1),
        client_cpu_seconds=out["cpu_seconds"],
        broker_cpu_seconds=_cpu_seconds(broker) - broker_cpu,
        in_topic=_records_in(cfg.bootstrap_servers, topic),
        detail="public API, one send() per record",
    )


def _kafka_python_round(
    broker: EmbeddedKafka, dataset: Dataset, topic: str, settings: dict[str, Any]
) -> tuple[Result, float]:
    cfg = broker.cfg
    broker_cpu = _cpu_seconds(broker)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        out = pool.submit(
            produce_with_kafka_python, cfg.bootstrap_servers, topic, str(dataset.events_csv), settings
        ).result()
    broker_cpu = _cpu_seconds(broker) - broker_cpu
    detail = f"read {out['read']:,}, rejected {out['rejected']:,}, failed {out['failed']:,}"
    if out["first_error"]:
        detail += f"; first error {out['first_error']}"
    result = Result(
        tool="kafka-python (Replayer)",
        topic=topic,
        records=out["sent"],
        seconds=out["seconds"],
        payload_bytes=dataset.payload_bytes * out["sent"] // max(dataset.records, 1),
        client_cpu_seconds=out["cpu_seconds"],
        broker_cpu_seconds=broker_cpu,
        in_topic=_records_in(cfg.bootstrap_servers, topic),
        detail=detail,
    )
    return result, out["max_rss_mib"]


def java_arguments(topic: str, dataset: Dataset, props: dict[str, str]) -> list[str]:
    return [
        "--topic",
        topic,
        "--num-records",
        str(dataset.records),
        "--throughput",
        "-1",
        "--payload-file",
        str(dataset.payload_file),
        "--producer-props",
        *(f"{k}={v}" for k, v in props.items()),
    ]


_JAVA_TOTAL = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency"
)


def _java_round(broker: EmbeddedKafka, dataset: Dataset, topic: str, props: dict[str, str]) -> Result:
    cfg = broker.cfg
    broker_cpu = _cpu_seconds(broker)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = run_tool(
        cfg, "kafka-producer-perf-test", java_arguments(topic, dataset, props), timeout=JAVA_TIMEOUT_SECONDS
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    broker_cpu = _cpu_seconds(broker) - broker_cpu
    totals = _JAVA_TOTAL.findall(done.stdout)
    if done.returncode != 0 or not totals:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise RuntimeError(f"ProducerPerformance failed (exit {done.returncode}):\n{tail}")
    records, rate, _mb, latency = totals[-1]  # the last line is the run's total
    seconds = int(records) / float(rate)
    return Result(
        tool="Java ProducerPerformance",
        topic=topic,
        records=int(records),
        seconds=seconds,
        payload_bytes=dataset.payload_bytes * int(records) // dataset.records,  # same sizes on average
        client_cpu_seconds=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        broker_cpu_seconds=broker_cpu,
        in_topic=_records_in(cfg.bootstrap_servers, topic),
        detail=f"avg latency {float(latency):,.0f} ms",
    )


def _warm_up(broker: EmbeddedKafka, props: dict[str, str], partitions: int) -> None:
    """Let the broker's JIT compile its produce path, so whichever tool runs first is not penalized."""
    topic = f"bench-warm-up-{uuid.uuid4().hex[:8]}"
    KafkaClient(bootstrap_servers=broker.cfg.bootstrap_servers).ensure_topic(topic, partitions=partitions)
    args = [
        "--topic",
        topic,
        "--num-records",
        str(WARMUP_RECORDS),
        "--throughput",
        "-1",
        "--record-size",
        "140",
    ]
    done = run_tool(
        broker.cfg,
        "kafka-producer-perf-test",
        [*args, "--producer-props", *(f"{k}={v}" for k, v in props.items())],
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the warm-up with ProducerPerformance failed:\n{done.stdout}\n{done.stderr}")


# ---- helpers --------------------------------------------------------------------------------------------


def bench_config(data_dir: Path) -> StackConfig:
    """A broker of our own: free ports, a throw-away data folder, the shared jar cache."""
    base = StackConfig.from_env()
    ports = Ports(kafka=free_port(), kafka_controller=free_port())
    return replace(base.with_data_dir(data_dir, ports), external_kafka=None)


def _cpu_seconds(broker: EmbeddedKafka) -> float:
    pid = broker.proc.pid()
    if pid is None:
        return float("nan")
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _records_in(bootstrap: str, topic: str) -> int:
    return sum(KafkaClient(bootstrap_servers=bootstrap).end_offsets(topic).values())


def _versions() -> str:
    def pkg(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False).stderr
    java_version = java.splitlines()[0] if java else "unknown"
    return (
        f"Python {platform.python_version()}, kafka-python {pkg('kafka-python')} (crc32c {pkg('crc32c')}), "
        f"Kafka {KAFKA_VERSION} ({java_version})"
    )


def _machine() -> str:
    mem_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return f"{os.cpu_count()} CPUs, {mem_kib / MIB:.1f} GiB RAM"


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f} (1 min) {five:.1f} (5 min)"


def _stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so `finally` stops the broker (no orphan JVM)."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def _row(result: Result) -> str:
    return (
        f"  {result.tool:<26} {result.records:>11,} {result.seconds:>8.1f} {result.rate:>10,.0f}"
        f" {result.mib_per_second:>7.1f} {result.client_cpu_seconds:>12.1f} {result.broker_cpu_seconds:>12.1f}"
    )


def _one_round(
    n: int,
    rounds: int,
    broker: EmbeddedKafka,
    dataset: Dataset,
    settings: dict[str, Any],
    props: dict[str, str],
    public_send: bool = False,
) -> tuple[Result, Result, float, Result | None]:
    """Both tools on fresh topics; even rounds start with Java, so neither always meets a colder broker."""
    suffix = uuid.uuid4().hex[:8]
    ours_topic, java_topic = f"bench-kafka-python-{suffix}", f"bench-java-{suffix}"
    kafka = KafkaClient(bootstrap_servers=broker.cfg.bootstrap_servers)
    for topic in (ours_topic, java_topic):
        kafka.ensure_topic(topic, partitions=settings["partitions"])
    results: dict[str, Any] = {}
    order = ["ours", "java"] if n % 2 else ["java", "ours"]
    for tool in order:
        name = "kafka-python Replayer" if tool == "ours" else "Java ProducerPerformance"
        print(f"round {n}/{rounds}: {name} ({_load()})", flush=True)
        if tool == "ours":
            results["ours"], results["rss"] = _kafka_python_round(broker, dataset, ours_topic, settings)
        else:
            results["java"] = _java_round(broker, dataset, java_topic, props)
    public = None
    if public_send:
        public_topic = f"bench-public-send-{suffix}"
        kafka.ensure_topic(public_topic, partitions=settings["partitions"])
        print(f"round {n}/{rounds}: kafka-python send() per record ({_load()})", flush=True)
        public = _public_send_round(broker, dataset, public_topic, settings)
    return results["ours"], results["java"], results["rss"], public


def _report(
    ours: Result, java: Result, peak_rss: float, dataset: Dataset, public: Result | None = None
) -> bool:
    print(
        f"\n  {'':<26} {'records':>11} {'seconds':>8} {'msgs/s':>10} {'MiB/s':>7} {'client CPU s':>12} {'broker CPU s':>12}"
    )
    print(_row(ours))
    print(_row(java))
    if public is not None:
        print(_row(public))
        per = [r.client_cpu_seconds / max(r.records, 1) * 1e6 for r in (ours, public)]
        print(
            f"  client CPU per record: batch appender {per[0]:.2f} us, public send() {per[1]:.2f} us "
            f"({per[1] / per[0]:.1f}x); throughput appender / send(): {ours.rate / max(public.rate, 1e-9):.2f}"
        )
    ratio = ours.rate / java.rate if java.rate else 0.0
    print(
        f"  kafka-python / Java: {ratio:.2f}"
        + (f" (Java is {1 / ratio:.1f}x faster)" if 0 < ratio < 1 else "")
    )
    target = "met" if ours.rate >= TARGET_MESSAGES_PER_SECOND else "NOT met"
    print(f"  target {TARGET_MESSAGES_PER_SECOND:,} msgs/s with kafka-python: {target}")
    print(f"  peak RSS of the Python producer process: {peak_rss:,.0f} MiB")
    print(f"  kafka-python: {ours.detail}; Java: {java.detail}")
    ok = True
    for result in (ours, java, *([public] if public is not None else [])):
        good = result.in_topic == dataset.records == result.records
        ok = ok and good
        print(
            f"  {'verified' if good else 'MISMATCH'}: {result.topic} holds {result.in_topic:,} records"
            f" (expected {dataset.records:,})"
        )
    print(f"  after the round: {_load()}\n", flush=True)
    return ok


# ---- the benchmark --------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    scale = parse_scale(str(args.scale))
    cache = args.data_dir or StackConfig.from_env().cache_dir / "bench-data"
    dataset = prepare_dataset(cache, scale, args.seed)
    compression = None if args.compression == "none" else args.compression
    settings: dict[str, Any] = {
        "partitions": args.partitions,
        "linger_ms": args.linger_ms,
        "kafka_batch_bytes": args.batch_bytes,
        "compression": compression,
        "batch_size": args.batch_size,
        "max_in_flight_batches": args.max_in_flight_batches,
    }
    _stop_on_sigterm()
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp:
        broker = EmbeddedKafka(bench_config(Path(tmp)))
        bootstrap = broker.cfg.bootstrap_servers
        props = {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": "true",
            "linger.ms": str(args.linger_ms),
            "batch.size": str(args.batch_bytes),
            "compression.type": args.compression,
        }
        print(f"starting an embedded Kafka {KAFKA_VERSION} broker at {bootstrap}", flush=True)
        broker.start()
        try:
            print(f"warming the broker up: {WARMUP_RECORDS:,} records, not measured", flush=True)
            _warm_up(broker, props, args.partitions)
            print(
                f"\nProducer benchmark: {dataset.records:,} events ({scale}, seed {args.seed}),"
                f" {dataset.average_bytes:.1f} bytes of key + value + headers each on average\n"
                f"settings (both tools): acks=all, enable.idempotence=true, linger.ms={args.linger_ms},"
                f" batch.size={args.batch_bytes:,}, compression.type={args.compression},"
                f" {args.partitions} partitions\n"
                f"machine: {_machine()}; {_versions()}",
                flush=True,
            )
            for n in range(1, args.rounds + 1):
                ours, java, peak_rss, public = _one_round(
                    n, args.rounds, broker, dataset, settings, props, args.public_send
                )
                ok = _report(ours, java, peak_rss, dataset, public) and ok
        finally:
            broker.stop()
    shown = " ".join(java_arguments("<topic>", dataset, {**props, "bootstrap.servers": "<broker>"}))
    print(f"\nJava side: kafka-producer-perf-test {shown}")
    return 0 if ok else 1
