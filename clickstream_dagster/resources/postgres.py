"""PostgreSQL: the one resource through which assets, sensors and checks reach the events database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import psycopg
from psycopg_pool import ConnectionPool
from pydantic import PrivateAttr

from clickstream_dagster.settings import libpq_url, redact_url
from clickstream_dagster.sql.migrate import apply_migrations


class PostgresResource(dg.ConfigurableResource):
    """psycopg 3 connections from a small pool; the URL is a libpq URL (DATABASE_URL)."""

    url: str
    pool_max_size: int = 4
    connect_timeout_s: int = 10

    _pool: ConnectionPool | None = PrivateAttr(default=None)

    @property
    def conninfo(self) -> str:
        return libpq_url(self.url)

    def _get_pool(self) -> ConnectionPool:
        if self._pool is None:
            self._pool = ConnectionPool(
                self.conninfo,
                min_size=1,
                max_size=self.pool_max_size,
                kwargs={"connect_timeout": self.connect_timeout_s},
                open=False,
                name="clickstream",
            )
            try:
                self._pool.open(wait=True, timeout=self.connect_timeout_s)
            except Exception as exc:
                self._pool = None
                raise RuntimeError(
                    f"PostgreSQL not reachable at {redact_url(self.conninfo)}: run `clickstream up` "
                    f"or set DATABASE_URL ({exc})"
                ) from exc
        return self._pool

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection; the block runs in one transaction, committed on success."""
        with self._get_pool().connection() as conn:
            yield conn

    def migrate(self) -> None:
        apply_migrations(self.conninfo)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
