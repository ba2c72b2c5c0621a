"""Session fixtures start a real Apache Kafka broker and a real PostgreSQL through the same code as
`clickstream up` (in a temporary data folder, on free ports), or reuse the ones named by
KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL. Factory fixtures give every test its own topic and database."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from clickstream_dagster.clients.kafka import KafkaClient
from clickstream_dagster.resources import PostgresResource
from clickstream_dagster.sql.migrate import apply_migrations
from clickstream_dagster.stack.config import Ports, StackConfig, with_database
from clickstream_dagster.stack.manager import Stack
from clickstream_dagster.stack.process import free_port


def pytest_configure(config: pytest.Config) -> None:
    """Each run gets its own temporary root. pytest's default root is shared by every run of the user
    (`/tmp/pytest-of-<user>/pytest-<N>`) and a starting run deletes all but the newest three: with two
    suites running at once on one machine, that deleted a live run's PostgreSQL data directory under it.
    A run's root is kept (for the logs of a failure) and pruned by later runs once it is a day old."""
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        parent = Path(tempfile.gettempdir()) / f"clickstream-pytest-{os.getuid()}"
        parent.mkdir(exist_ok=True)
        cutoff = time.time() - 86_400
        for old in parent.iterdir():
            if old.is_dir() and old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        config.option.basetemp = tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=parent)


def make_test_config(data_dir: Path, env: dict[str, str] | None = None) -> StackConfig:
    """A stack config on free ports in its own data folder; the Kafka jar cache is shared."""
    base = StackConfig.from_env(env if env is not None else dict(os.environ))
    ports = Ports(
        kafka=free_port(),
        kafka_controller=free_port(),
        postgres=free_port(),
        dagster=free_port(),
        spark_connect=free_port(),
        api=free_port(),
        dashboard=free_port(),
        dagster_code_server=free_port(),
        exporter=free_port(),
        prometheus=free_port(),
        producer_metrics=free_port(),
        alertmanager=free_port(),
    )
    return replace(base.with_data_dir(data_dir, ports), topic=f"clickstream-{uuid.uuid4().hex[:8]}")


@contextmanager
def running_stack(cfg: StackConfig) -> Iterator[Stack]:
    """The whole stack of `cfg` up, as `clickstream up` starts it, and down afterwards whatever happens."""
    stack = Stack(cfg)
    try:
        stack.up(log=lambda _m: None)
        yield stack
    finally:
        stack.down(log=lambda _m: None)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    cfg = make_test_config(tmp_path_factory.mktemp("stack"))
    stack = Stack(cfg)
    stack.up_data_services(log=lambda _msg: None)
    yield stack
    stack.down(log=lambda _msg: None)


@pytest.fixture(scope="session")
def stack_config(stack: Stack) -> StackConfig:
    return stack.cfg


@pytest.fixture(scope="session")
def bootstrap_servers(stack_config: StackConfig) -> str:
    return stack_config.bootstrap_servers


@pytest.fixture(scope="session")
def spark_connect_endpoint(tmp_path_factory: pytest.TempPathFactory, stack: Stack) -> Iterator[str]:
    """A real Spark Connect server (started once per session, as `clickstream up` starts it)."""
    from clickstream_dagster.stack.spark import EmbeddedSparkConnect

    if stack.cfg.external_spark_remote:
        yield stack.cfg.external_spark_remote
        return
    server = EmbeddedSparkConnect(make_test_config(tmp_path_factory.mktemp("spark-connect")))
    server.start()
    try:
        yield server.endpoint
    finally:
        server.stop()


@pytest.fixture
def topic_factory(bootstrap_servers: str, stack_config: StackConfig) -> Callable[..., str]:
    """Create a fresh topic for the calling test: `topic_factory(partitions=3)`."""
    kafka = KafkaClient(bootstrap_servers=bootstrap_servers)

    def make(partitions: int = 3, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        kafka.ensure_topic(
            name, partitions=partitions, replication_factor=stack_config.kafka_replication_factor
        )
        return name

    return make


def create_database(cfg: StackConfig, migrate: bool = True) -> str:
    """A fresh database on the session's server (migrated unless told otherwise); returns its URL."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(with_database(cfg.database_url, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_database(cfg.database_url, name)
    if migrate:
        apply_migrations(url)
    return url


def drop_database(cfg: StackConfig, url: str) -> None:
    name = url.rsplit("/", 1)[-1].split("?", 1)[0]
    with psycopg.connect(with_database(cfg.database_url, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def database_factory(stack_config: StackConfig) -> Iterator[Callable[..., str]]:
    """Create a fresh database (migrated unless told otherwise) and return its URL; dropped afterwards."""
    created: list[str] = []

    def make(migrate: bool = True) -> str:
        created.append(create_database(stack_config, migrate))
        return created[-1]

    yield make
    for url in created:
        drop_database(stack_config, url)


@pytest.fixture
def pg_url(database_factory: Callable[..., str]) -> str:
    return database_factory()


@pytest.fixture
def kafka(bootstrap_servers: str, topic_factory: Callable[..., str]) -> KafkaClient:
    return KafkaClient(bootstrap_servers=bootstrap_servers, topic=topic_factory())


@pytest.fixture
def postgres(pg_url: str) -> Iterator[PostgresResource]:
    resource = PostgresResource(url=pg_url)
    yield resource
    resource.close()
