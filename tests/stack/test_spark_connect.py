"""The embedded Spark Connect server: starts from pyspark's bundled Spark, listens on loopback only, reads
PostgreSQL through JDBC, and leaves no JVM behind when stopped."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from clickstream_dagster.clients.spark import SparkClient, jdbc_from_libpq, read_jdbc
from clickstream_dagster.stack.process import StackError, group_alive, pid_alive, port_open
from clickstream_dagster.stack.spark import EmbeddedSparkConnect, fetch_jdbc_jars
from tests.conftest import make_test_config
from tests.helpers import event_months


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedSparkConnect]:
    server = EmbeddedSparkConnect(make_test_config(tmp_path_factory.mktemp("spark-connect")))
    started = time.monotonic()
    server.start()
    print(f"\nSpark Connect server ready in {time.monotonic() - started:.1f} s at {server.endpoint}")
    pid = server.proc.pid()
    assert pid is not None
    yield server

    # Stopping takes the driver JVM and anything it started (its process group) with it.
    assert server.stop()
    assert not pid_alive(pid)
    assert not group_alive(pid)
    assert not port_open(server.cfg.host, server.cfg.ports.spark_connect)
    assert not server.stop(), "a second stop has nothing to do"


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of the LISTEN sockets on `port`, from /proc/net/tcp{,6} (hex, as the kernel shows them)."""
    found = set()
    for name in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def test_server_is_healthy_on_its_endpoint(server: EmbeddedSparkConnect) -> None:
    cfg = server.cfg
    assert server.endpoint == f"sc://127.0.0.1:{cfg.ports.spark_connect}"
    assert server.healthy()
    assert server.proc.pid_file.is_file()
    assert "Spark Connect server started" in server.proc.log_file.read_text()


def test_server_listens_on_loopback_only(server: EmbeddedSparkConnect) -> None:
    addresses = _listening_addresses(server.cfg.ports.spark_connect)
    loopback = {
        "0100007F",  # 127.0.0.1
        "0000000000000000FFFF00000100007F",  # ::ffff:127.0.0.1
    }
    assert addresses, "nothing listens on the Spark Connect port"
    assert addresses <= loopback, f"Spark Connect listens beyond loopback: {addresses}"


def test_start_again_reuses_the_running_server(server: EmbeddedSparkConnect) -> None:
    pid = server.proc.pid()
    server.start(timeout=30)
    assert server.proc.pid() == pid


def test_client_reads_postgres_through_the_server(server: EmbeddedSparkConnect, pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        event_months(conn, [1433000000000, 1433000000500])
        conn.execute(
            "INSERT INTO clickstream_events"
            ' ("timestamp", event_time, visitorid, event, itemid, kafka_topic, kafka_partition, kafka_offset)'
            " SELECT 1433000000000 + g, to_timestamp((1433000000000 + g) / 1000.0), g % 7, 'view', g % 11,"
            " 't', 0, g FROM generate_series(1, 500) AS g"
        )
    spark = SparkClient(remote=server.endpoint)
    started = time.monotonic()
    try:
        session = spark.session()
        df = read_jdbc(session, jdbc_from_libpq(pg_url), "clickstream_events", ["TRUE"])
        assert df.count() == 500
        assert df.select("visitorid").distinct().count() == 7
    finally:
        spark.stop()
    print(f"\nconnect + 2 JDBC queries: {time.monotonic() - started:.2f} s")
    assert "SPARK_CONNECT_MODE_ENABLED" not in os.environ, "stop() should unmark the process"


def test_occupied_port_fails_with_a_clear_message(tmp_path: Path) -> None:
    cfg = make_test_config(tmp_path)
    with socket.socket() as blocker:
        blocker.bind((cfg.host, cfg.ports.spark_connect))
        blocker.listen()
        with pytest.raises(StackError, match="CLICKSTREAM_SPARK_CONNECT_PORT"):
            EmbeddedSparkConnect(cfg).start(timeout=10)
    assert not EmbeddedSparkConnect(cfg).proc.running()


def test_unreachable_remote_says_what_to_do(tmp_path: Path) -> None:
    port = make_test_config(tmp_path).ports.spark_connect  # free, nothing listens there
    with pytest.raises(
        RuntimeError, match=r"Spark Connect not reachable at sc://127\.0\.0\.1:\d+: run `clickstream up`"
    ):
        SparkClient(remote=f"sc://127.0.0.1:{port}").session()
    with pytest.raises(ValueError, match="expected sc://host:port"):
        SparkClient(remote="http://127.0.0.1:15002").session()


def test_jdbc_jars_come_from_the_cache(server: EmbeddedSparkConnect) -> None:
    jars = fetch_jdbc_jars(server.cfg)
    assert any(j.name.startswith("postgresql-42.7.") for j in jars)
    assert all(j.is_file() for j in jars)
