"""Dagster's PostgreSQL storage, keeping its connections open instead of opening one per call.

`dagster-postgres` gives every process a SQLAlchemy engine without a pool: each storage call (a run's event,
a sensor tick's cursor, the daemon's heartbeat) opens a new connection, which costs the client a handshake and
PostgreSQL a new backend process. Only the webserver switches to a pool (`optimize_for_webserver`). On the
2-core machines here that churn was a third of a core in the daemon alone at 2,000 events/s (bench/README.md),
and each run paid it for every event it wrote. This class is the same storage with the webserver's pool in
every process that opens the instance: daemon, code server, run processes.

A process forked from one that opened the instance must not share the parent's connections: the run server
(`run_worker.py`) closes them with `close_connections` before it forks; each run opens the instance anew.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clickstream_dagster.stack.compat import require_dagster

require_dagster()

from dagster import DagsterInstance  # noqa: E402
from dagster._serdes import ConfigurableClassData  # noqa: E402
from dagster_postgres import DagsterPostgresStorage  # noqa: E402
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config  # noqa: E402

# One connection stays open per storage (run, event log, schedules); threads that need one at the same time get
# up to this many more, closed when returned. No statement timeout: the webserver's 15 s default would fail a
# long query of a run or the daemon. Connections are replaced hourly.
MAX_OVERFLOW = 10
POOL_RECYCLE_S = 3600
NO_STATEMENT_TIMEOUT = 0


class PooledPostgresStorage(DagsterPostgresStorage):
    """`DagsterPostgresStorage` with a connection pool in every process (dagster.yaml `storage: custom`)."""

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PooledPostgresStorage:
        storage = cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )
        for part in (storage.run_storage, storage.event_log_storage, storage.schedule_storage):
            part.optimize_for_webserver(
                statement_timeout=NO_STATEMENT_TIMEOUT, pool_recycle=POOL_RECYCLE_S, max_overflow=MAX_OVERFLOW
            )
        return storage


def close_connections(instance: DagsterInstance) -> None:
    """Close the pooled connections of an instance's storages (Dagster's `dispose` leaves engines open)."""
    for part in (instance.run_storage, instance.event_log_storage, instance.schedule_storage):
        engine = getattr(part, "_engine", None)
        if engine is not None:
            engine.dispose()
