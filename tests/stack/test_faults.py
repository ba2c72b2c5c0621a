"""Faults on the whole running stack: the daemon's Kafka sensor launches the runs, and servers are restarted or
killed under them. Every test ends with a recount against independent computations: the messages a plain
read_committed consumer gets from the topic (stored + quarantined = exactly those, once each), and
windowed_stats and event_statistics against plain SQL over the stored rows.

One stack (Kafka, PostgreSQL, Spark Connect, Dagster's code server, webserver and daemon) serves the module;
the tests run in order, each adding events to the same topic.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import psycopg
import pytest
from dagster._core.test_utils import create_run_for_test

from clickstream_dagster.analytics.sessions import queries as sq
from clickstream_dagster.analytics.sessions import session_gap_ms
from clickstream_dagster.clients.kafka import KafkaClient
from clickstream_dagster.messages import encode_key, encode_value
from clickstream_dagster.sensors.sessions import SWEEP_TAG
from clickstream_dagster.settings import libpq_url
from clickstream_dagster.stack.config import StackConfig
from clickstream_dagster.stack.demo import dagster_cli, wait_until_ingested
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

EXTERNAL = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "DATABASE_URL",
    "SPARK_REMOTE",
    "DAGSTER_DATABASE_URL",
    "SLACK_WEBHOOK_URL",
)


# The stack's one secret here: a webhook whose path is the token, served by a local server that records
# what it receives (failed runs post there). Nothing the stack logs may hold it (the last test).
WEBHOOK_TOKEN = f"T{uuid.uuid4().hex[:8]}/B{uuid.uuid4().hex[:8]}/{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def webhook() -> Iterator[str]:
    """The webhook's URL; what it receives is kept in `posts` (not asserted: failed runs post there)."""
    posts: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            posts.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/services/{WEBHOOK_TOKEN}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, webhook: str) -> Iterator[Stack]:
    env = {k: v for k, v in os.environ.items() if k not in EXTERNAL}
    env["SLACK_WEBHOOK_URL"] = webhook
    with pytest.MonkeyPatch.context() as mp:
        # Ranges merge into the ledger's checkpoints a minute after they are recorded (15 by default), so
        # the merges happen under the faults below and every recount goes through them.
        mp.setenv("CLICKSTREAM_LEDGER_SETTLE_SECONDS", "60")
        # A run stuck in STARTING is failed after 20 s (120 by default), so its ranges are taken again.
        mp.setenv("CLICKSTREAM_RUN_START_TIMEOUT_SECONDS", "20")
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
        # Sessions against plain SQL over the stored rows: a session starts at each visitor's first event and
        # after each gap longer than the session gap.
        sessions = conn.execute("SELECT count(*), coalesce(sum(events), 0) FROM sessions").fetchone()
        starts = conn.execute(
            'SELECT count(*) FROM (SELECT "timestamp" - lag("timestamp") OVER (PARTITION BY visitorid '
            'ORDER BY "timestamp") AS since FROM clickstream_events) e WHERE since IS NULL OR since > %s',
            (session_gap_ms(),),
        ).fetchone()
        assert sessions == (starts[0] if starts else None, len(stored)), "every event in one session"
    return len(stored)


def test_a_run_that_never_starts_is_failed(stack: Stack) -> None:
    """A run whose worker died before it started (seen in CI when PostgreSQL restarted during a launch) stays
    STARTING: counted in flight, its ranges were never a gap and never ingested. Run monitoring fails it."""
    with dg.DagsterInstance.from_config(str(stack.cfg.dagster_home)) as instance:
        run = create_run_for_test(
            instance,
            job_name="ingest_events",
            status=dg.DagsterRunStatus.NOT_STARTED,
            tags={"dagster/max_retries": "0"},
        )
        # What a launch records before the worker takes over (its launch time): then nothing more.
        instance.report_dagster_event(
            dg.DagsterEvent(event_type_value="PIPELINE_STARTING", job_name="ingest_events"), run.run_id
        )
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTING  # type: ignore[union-attr]
        deadline = time.monotonic() + 120
        while (status := instance.get_run_by_id(run.run_id).status) == dg.DagsterRunStatus.STARTING:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "run monitoring fails a run stuck in STARTING"
            time.sleep(1)
    assert status == dg.DagsterRunStatus.FAILURE


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


def _runs(cfg: StackConfig, where: str, limit: int = 50) -> list[dict[str, Any]]:
    """The newest runs matching a GraphQL RunsFilter: their id, status and tag keys."""
    query = (
        f"{{ runsOrError(filter: {{{where}}}, limit: {limit}) {{ ... on Runs {{ results {{ runId status "
        "tags { key } } } } }"
    )
    body = httpx.post(f"{cfg.dagster_url}/graphql", json={"query": query}, timeout=30).json()
    return [
        {"id": r["runId"], "status": r["status"], "tags": {t["key"] for t in r["tags"]}}
        for r in body["data"]["runsOrError"]["results"]
    ]


def test_sessions_left_without_an_applier_are_swept(stack: Stack) -> None:
    """Events whose runs left them to an applier that then went away (here: a connection holding the applier's
    turn, closed without applying anything) are applied by a run the stranded_sessions sensor requests."""
    cfg = stack.cfg
    before = _stored_now(cfg)
    with psycopg.connect(cfg.database_url, autocommit=True) as holder:
        assert holder.execute(sq.TRY_APPLIER_LOCK).fetchone() == (True,)
        _produce(cfg, 20_000)
        deadline = time.monotonic() + 300
        while _stored_now(cfg) < before + 20_000:
            assert time.monotonic() < deadline, "the runs store the events meanwhile"
            time.sleep(0.5)
        while _runs(cfg, "statuses: [QUEUED, NOT_STARTED, STARTING, STARTED]"):
            assert time.monotonic() < deadline, "the runs end"
            time.sleep(0.5)
        queued = holder.execute("SELECT count(*) FROM session_changes").fetchone()
        assert queued and queued[0] > 0, "the runs left their events to the holder"
    _caught_up(stack, timeout_s=240)  # no new message: only the sweeper's run can apply them
    # The queue is applied inside the sweep's run, before the run reports its end: wait for that end.
    deadline = time.monotonic() + 120
    while True:
        sweeps = [r["status"] for r in _runs(cfg, 'pipelineName: "ingest_events"') if SWEEP_TAG in r["tags"]]
        if sweeps and not set(sweeps) & {"QUEUED", "NOT_STARTED", "STARTING", "STARTED"}:
            break
        assert time.monotonic() < deadline, f"the sweep runs end: {sweeps}"
        time.sleep(0.5)
    # (a sweep requested while the turn was held found it held and left the queue: then a second one)
    assert set(sweeps) == {"SUCCESS"}
    assert _recount(stack) == before + 20_000
    # By now the sensor has merged the settled ranges of every fault above into checkpoints (the recounts
    # went through them): one row per partition holds most of the ledger.
    with psycopg.connect(cfg.database_url) as conn:
        rows = conn.execute(
            "SELECT count(*), max(ranges_merged), sum(ranges_merged) FROM ingested_ranges WHERE kafka_topic = %s",
            (cfg.topic,),
        ).fetchone()
    assert rows and rows[1] > 10 and rows[0] < rows[2] / 2, rows


def test_housekeeping_while_events_flow(stack: Stack, tmp_path: Path) -> None:
    """The housekeeping job, run on the stack's instance while 100,000 events are produced and ingested, with
    every finished ingestion run old enough to go: those runs are deleted, the runs in flight go on, and the
    recount finds every message once."""
    cfg = stack.cfg
    before = _stored_now(cfg)
    finished = {r["id"] for r in _runs(cfg, 'pipelineName: "ingest_events", statuses: [SUCCESS]', 10_000)}
    assert finished, "earlier tests left finished runs to delete"
    producer = threading.Thread(target=_produce, args=(cfg, 100_000))
    producer.start()
    _wait_for_loading(cfg, before)
    config = tmp_path / "housekeeping.json"
    config.write_text(json.dumps({"ops": {"prune_run_history": {"config": {"runs_days": 0}}}}))
    dagster_cli(cfg, ["job", "execute", "-j", "housekeeping", "--config", str(config)])
    producer.join()
    _caught_up(stack)
    assert _recount(stack) == before + 100_000
    left = {r["id"] for r in _runs(cfg, 'pipelineName: "ingest_events"', 10_000)}
    assert not finished & left, "every finished run of before was deleted"
    assert _runs(cfg, 'pipelineName: "housekeeping"')[0]["status"] == "SUCCESS"


def test_no_log_holds_the_secret_it_was_given(stack: Stack) -> None:
    """After every fault above: the webhook's token is in no log or config the stack wrote (every file of its
    data folder but the databases' and brokers' own data), only in the owner-only file Alertmanager reads it
    from, and not in Dagster's event log."""
    cfg = stack.cfg
    token = WEBHOOK_TOKEN.encode()
    data = {"postgres", "kafka", "spark", "data"}  # the servers' data (PostgreSQL's is queried below)
    files = [
        p
        for p in cfg.data_dir.rglob("*")
        if p.is_file() and not data & set(p.relative_to(cfg.data_dir).parts[:-1])
    ]
    secret_file = cfg.data_dir / "alertmanager" / "slack_webhook_url"
    assert secret_file in files and secret_file.stat().st_mode & 0o077 == 0
    logs = [p for p in files if p != secret_file]
    assert any(p.name == "dagster-daemon.log" for p in logs) and sum(p.stat().st_size for p in logs) > 100_000
    assert [str(p) for p in logs if token in p.read_bytes()] == [], "the webhook's token leaked"
    with psycopg.connect(libpq_url(cfg.dagster_database_url)) as conn:
        events = conn.execute(
            "SELECT count(*) FROM event_logs WHERE event LIKE %s",
            (f"%{WEBHOOK_TOKEN.rsplit('/', maxsplit=1)[-1]}%",),
        ).fetchone()
        runs = conn.execute("SELECT count(*) FROM runs").fetchone()
    assert events == (0,) and runs and runs[0] > 0
