"""Faults on the whole running stack: the daemon's Kafka sensor launches the runs, and servers are restarted or
killed under them. Every test ends with a recount against independent computations: the messages a plain
read_committed consumer gets from the topic (stored + quarantined = exactly those, once each), and
windowed_stats and event_statistics against plain SQL over the stored rows.

One stack (Kafka, PostgreSQL, Spark Connect, Dagster's code server, webserver and daemon) serves the module;
the tests run in order, each adding events to the same topic.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from clickstream_dagster.clients.kafka import KafkaClient
from clickstream_dagster.messages import encode_key, encode_value
from clickstream_dagster.stack.config import StackConfig
from clickstream_dagster.stack.demo import wait_until_ingested
from clickstream_dagster.stack.manager import Stack
from tests.assets.conftest import random_events
from tests.assets.test_analytics import (
    INDEPENDENT_TOTALS,
    INDEPENDENT_WINDOWS,
    PIPELINE_TOTALS,
    PIPELINE_WINDOWS,
)
from tests.conftest import make_test_config, running_stack
from tests.helpers import committed_in_topic

pytestmark = pytest.mark.slow

EXTERNAL = ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "SPARK_REMOTE", "DAGSTER_DATABASE_URL")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {k: v for k, v in os.environ.items() if k not in EXTERNAL}
    with running_stack(make_test_config(tmp_path_factory.mktemp("faults") / "data", env)) as stack:
        yield stack


class Seeds:
    next = 100


def _produce(cfg: StackConfig, n: int) -> None:
    Seeds.next += 1
    events = random_events(n, seed=Seeds.next, start_ms=1_433_000_000_000 + Seeds.next * 86_400_000)
    kafka = KafkaClient(bootstrap_servers=cfg.bootstrap_servers, topic=cfg.topic)
    with kafka.producer() as producer:
        for e in events:
            producer.send(cfg.topic, key=encode_key(e[1]), value=encode_value(*e))
        producer.flush()


def _stored_now(cfg: StackConfig) -> int:
    with psycopg.connect(cfg.database_url, connect_timeout=5) as conn:
        row = conn.execute("SELECT count(*) FROM clickstream_events").fetchone()
    return int(row[0]) if row else 0


def _wait_for_loading(cfg: StackConfig, above: int, timeout_s: float = 120) -> int:
    """Block until runs have stored more rows than `above` (a run is mid-way through the backlog)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stored = _stored_now(cfg)
        if stored > above:
            return stored
        time.sleep(0.1)
    raise AssertionError(f"no run stored anything past {above} rows within {timeout_s} s")


def _caught_up(stack: Stack, timeout_s: float = 420) -> None:
    kafka = KafkaClient(bootstrap_servers=stack.cfg.bootstrap_servers, topic=stack.cfg.topic)
    wait_until_ingested(stack.cfg, kafka.end_offsets(), log=lambda _m: None, timeout_s=timeout_s)


def _recount(stack: Stack) -> int:
    """Nothing lost, nothing doubled, windows and totals exact; returns the events stored."""
    cfg = stack.cfg
    in_topic = committed_in_topic(cfg.bootstrap_servers, cfg.topic, cfg.kafka_partitions)
    with psycopg.connect(cfg.database_url) as conn:
        stored = conn.execute(
            "SELECT kafka_partition, kafka_offset FROM clickstream_events WHERE kafka_topic = %s",
            (cfg.topic,),
        ).fetchall()
        quarantined = conn.execute(
            "SELECT kafka_partition, kafka_offset FROM quarantine WHERE kafka_topic = %s AND replayed_at IS NULL",
            (cfg.topic,),
        ).fetchall()
        assert len(stored) == len(set(stored)), "nothing doubled"
        assert set(stored) | set(quarantined) == set(in_topic), (
            "nothing lost: every message of the topic, once"
        )
        assert not set(stored) & set(quarantined)
        assert conn.execute(PIPELINE_WINDOWS).fetchall() == conn.execute(INDEPENDENT_WINDOWS).fetchall()
        assert conn.execute(PIPELINE_TOTALS).fetchall() == conn.execute(INDEPENDENT_TOTALS).fetchall()
        gaps = conn.execute(
            "SELECT count(*) FROM ingestion_repairs g WHERE NOT EXISTS (SELECT 1 FROM ingested_ranges r "
            "WHERE r.kafka_topic = g.kafka_topic AND r.kafka_partition = g.kafka_partition "
            "AND r.start_offset <= g.start_offset AND r.end_offset >= g.end_offset)"
        ).fetchone()
        assert gaps == (0,), "no gap left open"
    return len(stored)


def test_postgres_restarted_in_the_middle_of_a_load(stack: Stack) -> None:
    before = _stored_now(stack.cfg)
    _produce(stack.cfg, 400_000)
    _wait_for_loading(stack.cfg, before)
    assert stack.postgres.stop()
    time.sleep(1)
    stack.postgres.start()
    _caught_up(stack)
    assert _recount(stack) == before + 400_000


def test_broker_restarted_while_a_run_is_reading(stack: Stack) -> None:
    before = _stored_now(stack.cfg)
    _produce(stack.cfg, 400_000)
    _wait_for_loading(stack.cfg, before)
    assert stack.kafka.stop()
    time.sleep(2)
    stack.kafka.start()
    _caught_up(stack)
    assert _recount(stack) == before + 400_000


def test_daemon_killed_while_the_sensor_catches_up(stack: Stack) -> None:
    before = _stored_now(stack.cfg)
    _produce(stack.cfg, 600_000)
    _wait_for_loading(stack.cfg, before)
    pid = stack.dagster.daemon.pid()
    assert pid
    os.kill(pid, signal.SIGKILL)
    time.sleep(3)
    assert not stack.dagster.daemon.running()
    stack.dagster.start()
    _caught_up(stack)
    assert _recount(stack) == before + 600_000


def test_spark_connect_down_during_windowed_stats(stack: Stack) -> None:
    before = _stored_now(stack.cfg)
    assert stack.spark.stop()
    _produce(stack.cfg, 30_000)
    # The raw rows land (and stay) while the windows cannot be computed.
    deadline = time.monotonic() + 180
    while _stored_now(stack.cfg) < before + 30_000:
        assert time.monotonic() < deadline, "raw_events stores the events while Spark is down"
        time.sleep(0.5)
    with psycopg.connect(stack.cfg.database_url) as conn:
        pending = conn.execute("SELECT count(*) FROM dirty_windows").fetchone()
    assert pending and pending[0] > 0, "the windows wait for Spark"
    stack.spark.start()
    _produce(stack.cfg, 1_000)  # the next run's windowed_stats catches up on what waited
    _caught_up(stack)
    assert _recount(stack) == before + 31_000


def test_quarantine_replay_through_the_cli(stack: Stack) -> None:
    """A bad message from the running pipeline, repaired by SQL and replayed by `clickstream quarantine replay`
    (the replay_quarantine job on the stack's own Dagster instance), twice: stored once."""
    cfg = stack.cfg
    bad = b'{"v":1,"timestamp":1433000999000,"visitorid":-3,"event":"view","itemid":5,"transactionid":null}'
    kafka = KafkaClient(bootstrap_servers=cfg.bootstrap_servers, topic=cfg.topic)
    with kafka.producer() as producer:
        producer.send(cfg.topic, key=b"3", value=bad)
        producer.flush()
    _caught_up(stack)
    with psycopg.connect(cfg.database_url) as conn:
        row = conn.execute(
            "SELECT id, kafka_partition, kafka_offset, reason FROM quarantine WHERE raw_payload = %s", (bad,)
        ).fetchone()
        assert row is not None and str(row[3]).startswith("negative id: ")
        fixed = encode_value(1433000999000, 3, "view", 5, None)
        conn.execute("UPDATE quarantine SET repaired_payload = %s WHERE id = %s", (fixed, row[0]))
    env = {**os.environ, **cfg.service_env()}
    cli = str(Path(sys.executable).parent / "clickstream")
    for _ in range(2):
        done = subprocess.run(
            [cli, "quarantine", "replay", "--reason", "negative id"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    status = subprocess.run(
        [cli, "quarantine", "status"], env=env, capture_output=True, text=True, check=True
    )
    assert "negative id" in status.stdout
    with psycopg.connect(cfg.database_url) as conn:
        stored = conn.execute(
            "SELECT count(*), min(visitorid) FROM clickstream_events WHERE kafka_partition = %s AND kafka_offset = %s",
            (row[1], row[2]),
        ).fetchone()
        replayed = conn.execute(
            "SELECT replayed_at IS NOT NULL FROM quarantine WHERE id = %s", (row[0],)
        ).fetchone()
    assert stored == (1, 3) and replayed == (True,)
    _recount(stack)
