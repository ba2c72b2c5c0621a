"""A session database filled with real data (events, windows, reference data, registry, recommendations), and a
real Dagster instance with real runs whose storage is a PostgreSQL database on the session's server, served by
a real `dagster-webserver` process: the dashboard reads Dagster through that webserver's GraphQL API."""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
import streamlit as st
from psycopg import sql

from clickstream_dagster.sql.migrate import apply_migrations
from clickstream_dagster.stack.config import StackConfig, sqlalchemy_psycopg2_url, with_database
from clickstream_dagster.stack.process import ManagedProcess, free_port, wait_until
from tests.dashboard.filler import DagsterRuns, Filled, fill, fill_dagster_storage

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "dashboards" / "app.py"
DAGSTER_WEBSERVER = Path(sys.executable).parent / "dagster-webserver"

# The instance the filler writes to and the webserver serves (psycopg2 driver: see SQLAlchemy 2.1 in TRAPS).
INSTANCE_YAML = """\
storage:
  postgres:
    postgres_url: {url}
telemetry:
  enabled: false
"""


@dataclass
class FilledStack:
    events_url: str
    dagster_url: str  # the webserver serving the filled Dagster instance
    filled: Filled
    dagster_runs: DagsterRuns


def write_dagster_home(home: Path, storage_url: str) -> Path:
    """A DAGSTER_HOME whose instance keeps runs, events and schedules in the PostgreSQL database at `storage_url`."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(
        INSTANCE_YAML.format(url=json.dumps(sqlalchemy_psycopg2_url(storage_url)))
    )
    return home


@contextmanager
def dagster_webserver(home: Path, timeout: float = 90.0) -> Iterator[str]:
    """A real `dagster-webserver` serving the instance in `home` (no code location, read-only) on a free port;
    yields its URL once /server_info answers, and stops it (its whole process group) afterwards."""
    assert DAGSTER_WEBSERVER.is_file(), f"{DAGSTER_WEBSERVER} is missing: run `make setup`"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = ManagedProcess("dagster-webserver", home, home)
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    argv = [str(DAGSTER_WEBSERVER), "--empty-workspace", "--read-only", "-h", "127.0.0.1", "-p", str(port)]

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/server_info", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        process.start(argv, env, cwd=home)
        wait_until(ready, timeout, "dagster-webserver", process.running, lambda: process.log_tail(40))
        yield url
    finally:
        process.stop(timeout=10)


@pytest.fixture(scope="session")
def filled_stack(
    stack_config: StackConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FilledStack]:
    admin_url = with_database(stack_config.database_url, "postgres")
    suffix = uuid.uuid4().hex[:10]
    events_db, dagster_db = f"dash_{suffix}", f"dash_dagster_{suffix}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for name in (events_db, dagster_db):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    events_url = with_database(stack_config.database_url, events_db)
    home = write_dagster_home(
        tmp_path_factory.mktemp("dagster_home"), with_database(stack_config.database_url, dagster_db)
    )
    try:
        apply_migrations(events_url)
        filled = fill(events_url, tmp_path_factory.mktemp("raw"))
        runs = fill_dagster_storage(home)
        with dagster_webserver(home) as webserver_url:
            yield FilledStack(events_url, webserver_url, filled, runs)
    finally:
        st.cache_resource.clear()  # closes the app's pools and clients before the databases go
        with psycopg.connect(admin_url, autocommit=True) as conn:
            for name in (events_db, dagster_db):
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(autouse=True)
def fresh_streamlit_caches() -> Iterator[None]:
    """AppTest runs the app in this process: every test starts with empty query caches and pools."""
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()
