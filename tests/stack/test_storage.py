"""PooledPostgresStorage on a real PostgreSQL: a process's storage calls share a few connections, where
dagster-postgres' own storage opens a new one (a new server backend) for every call."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import dagster as dg
import psycopg

from clickstream_dagster.stack.config import sqlalchemy_psycopg2_url
from clickstream_dagster.stack.storage import close_connections

CALLS = 30


def _storage(kind: str, url: str) -> dict[str, Any]:
    config = {"postgres_url": sqlalchemy_psycopg2_url(url)}
    if kind == "dagster":
        return {"postgres": config}
    return {
        "custom": {
            "module": "clickstream_dagster.stack.storage",
            "class": "PooledPostgresStorage",
            "config": config,
        }
    }


def _sessions_opened(url: str, work: Callable[[], None]) -> int:
    """Connections opened to the database while `work` ran (PostgreSQL's own count, pg_stat_database)."""
    with psycopg.connect(url, autocommit=True) as monitor:

        def sessions() -> int:
            monitor.execute("SELECT pg_stat_clear_snapshot()")
            row = monitor.execute(
                "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
            ).fetchone()
            assert row is not None
            return int(row[0])

        def settled() -> int:  # backends report their session when they end; wait until the count stops
            last, deadline = sessions(), time.monotonic() + 10
            while time.monotonic() < deadline:
                time.sleep(0.5)
                now = sessions()
                if now == last:
                    return now
                last = now
            return last

        before = settled()
        work()
        return settled() - before


def _storage_calls(kind: str, url: str, tmp_path: Any, calls: int = CALLS) -> Callable[[], None]:
    home = tmp_path / f"{kind}-{calls}"
    home.mkdir(exist_ok=True)

    def work() -> None:
        with dg.instance_for_test(overrides={"storage": _storage(kind, url)}, temp_dir=str(home)) as instance:
            for _ in range(calls):
                instance.get_runs_count()  # run storage
                instance.get_latest_materialization_event(dg.AssetKey("nothing"))  # event log storage
                instance.all_instigator_state()  # schedule storage
            close_connections(instance)

    return work


def test_pooled_storage_reuses_connections_where_dagsters_opens_one_per_call(
    database_factory: Callable[..., str], tmp_path: Any
) -> None:
    plain_url, pooled_url = database_factory(migrate=False), database_factory(migrate=False)
    for url, kind in ((plain_url, "dagster"), (pooled_url, "pooled")):
        _storage_calls(kind, url, tmp_path)()  # the first instance on a database creates Dagster's tables
    plain = _sessions_opened(plain_url, _storage_calls("dagster", plain_url, tmp_path))
    pooled = _sessions_opened(pooled_url, _storage_calls("pooled", pooled_url, tmp_path))
    pooled_more_calls = _sessions_opened(
        pooled_url, _storage_calls("pooled", pooled_url, tmp_path, 4 * CALLS)
    )
    assert plain >= 3 * CALLS, plain  # at least one per call
    # Opening an instance costs a few (each storage checks its tables); the calls themselves none.
    assert pooled < 15, pooled
    assert pooled_more_calls - pooled <= 2, (pooled, pooled_more_calls)
