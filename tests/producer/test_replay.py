"""The producer against a real broker: exactly once, per-visitor order, rate, resume, outage, bad rows."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from clickstream_dagster.clients.kafka import KafkaClient
from clickstream_dagster.data.generator import generate
from clickstream_dagster.data.readers import iter_events
from clickstream_dagster.messages import HEADER_LINE, decode_value
from clickstream_dagster.producer.metrics import ProducerMetrics
from clickstream_dagster.producer.replay import Replayer, ReplayOptions
from clickstream_dagster.stack.kafka import EmbeddedKafka
from clickstream_dagster.stack.process import free_port
from tests.conftest import make_test_config
from tests.helpers import header, read_topic


@pytest.fixture(scope="module")
def events_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("raw")
    generate(out, 20_000, seed=7)
    return out / "events.csv"


def _lines_in_topic(bootstrap: str, topic: str) -> list[int]:
    return [int(header(r, HEADER_LINE)) for r in read_topic(bootstrap, topic)]


def _assert_exactly_once_in_visitor_order(bootstrap: str, topic: str, csv_path: Path) -> None:
    expected = {line: ev for line, ev in iter_events(csv_path) if not isinstance(ev, Exception)}
    records = read_topic(bootstrap, topic)
    lines = [int(header(r, HEADER_LINE)) for r in records]
    assert len(lines) == len(set(lines)), "a line was sent twice"
    assert set(lines) == set(expected), "lines missing from the topic"
    per_visitor: dict[int, list[int]] = defaultdict(list)
    for record, line in zip(records, lines, strict=True):
        msg = decode_value(record.value)
        ev = expected[line]
        assert (msg.timestamp, msg.visitorid, msg.event, msg.itemid, msg.transactionid) == (
            ev.timestamp,
            ev.visitorid,
            ev.event,
            ev.itemid,
            ev.transactionid,
        )
        assert record.key == str(ev.visitorid).encode()
        per_visitor[msg.visitorid].append(line)
    # Records are listed partition by partition in offset order; a visitor lives in one partition.
    assert all(seq == sorted(seq) for seq in per_visitor.values()), "a visitor's events are out of file order"


@pytest.mark.rehearsal  # also run against the 3-broker, Spark-cluster rehearsal
def test_every_event_arrives_exactly_once_in_visitor_order(
    bootstrap_servers: str, topic_factory: Callable[..., str], events_csv: Path
) -> None:
    topic = topic_factory(partitions=3)
    kafka = KafkaClient(bootstrap_servers=bootstrap_servers, topic=topic)
    summary = Replayer(
        kafka, ReplayOptions(path=events_csv, topic=topic, batch_size=1000), progress=False
    ).run()
    assert (summary.read, summary.sent, summary.rejected, summary.failed) == (20_000, 20_000, 0, 0)
    _assert_exactly_once_in_visitor_order(bootstrap_servers, topic, events_csv)


def test_rate_limit_holds_over_ten_seconds(
    bootstrap_servers: str, topic_factory: Callable[..., str], events_csv: Path
) -> None:
    topic = topic_factory(partitions=3)
    kafka = KafkaClient(bootstrap_servers=bootstrap_servers, topic=topic)
    rate = 1000
    options = ReplayOptions(
        path=events_csv, topic=topic, messages_per_second=rate, limit=11_000, batch_size=200
    )
    summary = Replayer(kafka, options, progress=False).run()
    assert summary.sent == 11_000
    stamps = sorted(r.timestamp for r in read_topic(bootstrap_servers, topic))  # producer CreateTime, ms
    span_s = (stamps[-1] - stamps[0]) / 1000
    assert span_s >= 10
    assert abs((len(stamps) - 1) / span_s - rate) / rate < 0.03
    # Steady, not bursty: every full second holds the target within 10 %.
    per_second: dict[int, int] = defaultdict(int)
    for ts in stamps:
        per_second[(ts - stamps[0]) // 1000] += 1
    full_seconds = [n for second, n in per_second.items() if second < int(span_s)]
    assert min(full_seconds) >= 0.9 * rate and max(full_seconds) <= 1.1 * rate, per_second


def test_killed_run_resumes_without_duplicates(
    bootstrap_servers: str, topic_factory: Callable[..., str], events_csv: Path, tmp_path: Path
) -> None:
    topic = topic_factory(partitions=3)
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers}
    cmd = [
        sys.executable,
        "-m",
        "clickstream_dagster.cli",
        "produce",
        "--file",
        str(events_csv),
        "--topic",
        topic,
    ]
    proc = subprocess.Popen(
        [*cmd, "--messages-per-second", "4000", "--batch-size", "100"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kafka = KafkaClient(bootstrap_servers=bootstrap_servers, topic=topic)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and sum(kafka.end_offsets().values()) < 2_000:
        time.sleep(0.1)  # let it get going, however slow the machine is
    proc.send_signal(signal.SIGKILL)  # no flush, no goodbye: the hardest interruption
    proc.wait()
    before = _lines_in_topic(bootstrap_servers, topic)
    assert 0 < len(before) < 20_000, "the kill should land mid-run"

    result = subprocess.run(
        [*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"already in topic {len(before):,}" in result.stdout
    _assert_exactly_once_in_visitor_order(bootstrap_servers, topic, events_csv)


def test_broker_outage_mid_run_loses_nothing(tmp_path: Path, events_csv: Path) -> None:
    cfg = make_test_config(tmp_path / "own-broker", {})
    broker = EmbeddedKafka(cfg)
    broker.start()
    try:
        topic = "outage"
        kafka = KafkaClient(bootstrap_servers=cfg.bootstrap_servers, topic=topic)
        options = ReplayOptions(path=events_csv, topic=topic, messages_per_second=2000, batch_size=200)
        result: dict[str, object] = {}
        thread = threading.Thread(
            target=lambda: result.setdefault("summary", Replayer(kafka, options, progress=False).run())
        )
        thread.start()
        time.sleep(3)
        assert broker.stop(), "broker should have been running"
        time.sleep(6)
        broker.start()
        thread.join(timeout=180)
        assert not thread.is_alive(), "producer did not finish after the broker came back"
        summary = result["summary"]
        assert getattr(summary, "sent", None) == 20_000 and getattr(summary, "failed", None) == 0
        _assert_exactly_once_in_visitor_order(cfg.bootstrap_servers, topic, events_csv)
    finally:
        broker.stop()


BAD_ROWS = {
    "missing fields": "1433221332117,5,view",
    "non-numeric visitor": "1433221332117,abc,view,10,",
    "unknown event": "1433221332117,5,click,10,",
    "bad timestamp": "yesterday,5,view,10,",
    "transactionid on a view": "1433221332117,5,view,10,77",
    "negative item": "1433221332117,5,view,-10,",
}


def test_bad_rows_are_reported_with_reasons_and_not_sent(
    bootstrap_servers: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    good = [
        "1433221332117,5,view,10,",
        "1433221332118,5,addtocart,10,",
        "1433221332119,5,transaction,10,14418.0",
    ]
    path = tmp_path / "events.csv"
    rows = ["timestamp,visitorid,event,itemid,transactionid", good[0], *BAD_ROWS.values(), *good[1:]]
    path.write_text("\n".join(rows) + "\n")
    topic = topic_factory(partitions=1)
    metrics = ProducerMetrics()
    port = free_port()
    metrics.serve(port)
    kafka = KafkaClient(bootstrap_servers=bootstrap_servers, topic=topic)
    summary = Replayer(kafka, ReplayOptions(path=path, topic=topic), metrics, progress=False).run()

    assert (summary.read, summary.sent, summary.rejected) == (9, 3, 6)
    assert summary.reconciles
    with summary.rejects_path.open() as f:  # type: ignore[union-attr]
        rejects = list(csv.DictReader(f))
    assert [int(r["line"]) for r in rejects] == [3, 4, 5, 6, 7, 8]
    assert all(r["reason"] for r in rejects)
    assert [r["raw"] for r in rejects] == list(BAD_ROWS.values())
    sent = [decode_value(r.value) for r in read_topic(bootstrap_servers, topic)]
    assert [m.event for m in sent] == ["view", "addtocart", "transaction"]
    assert sent[2].transactionid == 14418

    exposition = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert "clickstream_producer_messages_sent_total 3.0" in exposition
    assert "clickstream_producer_rows_rejected_total{" in exposition
    assert "clickstream_producer_send_latency_seconds_bucket" in exposition
