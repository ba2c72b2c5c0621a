"""A session database filled with real data (events, windows, reference data, registry, recommendations) and
a real Dagster storage database with real runs, on the session's PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import streamlit as st
from psycopg import sql

from clickstream_dagster.sql.migrate import apply_migrations
from clickstream_dagster.stack.config import StackConfig, sqlalchemy_psycopg2_url, with_database
from tests.dashboard.filler import Filled, fill, fill_dagster_storage

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "dashboards" / "app.py"


@dataclass
class FilledStack:
    events_url: str
    dagster_url: str
    filled: Filled


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
    dagster_url = with_database(stack_config.database_url, dagster_db)
    try:
        apply_migrations(events_url)
        filled = fill(events_url, tmp_path_factory.mktemp("raw"))
        fill_dagster_storage(sqlalchemy_psycopg2_url(dagster_url))
        yield FilledStack(events_url, dagster_url, filled)
    finally:
        st.cache_resource.clear()  # closes the app's pools before the databases go
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
