"""Where the dashboard reads from: the events database through a small read-only pool (`Database`, the one
database helper of the pages), and Dagster's webserver through the shared GraphQL client
(`clients.dagster.DagsterWebserver`). A database that is down or not migrated raises a `DashboardError`
whose message says what to run; the page shows it as a note."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import psycopg
from psycopg import errors
from psycopg_pool import ConnectionPool, PoolTimeout

from clickstream_dagster.clients.dagster import DagsterWebserver
from clickstream_dagster.settings import Settings, libpq_url, redact_url

EVENTS_UNREACHABLE_HINT = "start the local stack with `make up` (or `make demo`), or set DATABASE_URL"
EVENTS_SCHEMA_HINT = "apply the migrations with `clickstream up` (or `make demo`)"


class DashboardError(RuntimeError):
    """Something the page explains in a note instead of failing."""


class DatabaseUnavailable(DashboardError):
    pass


class SchemaMissing(DashboardError):
    pass


class Database:
    """A read-only psycopg 3 pool, opened on first use. When the server is down, the page is told so at
    once for `retry_after_s` instead of waiting for the connect timeout on every rerun."""

    def __init__(
        self,
        url: str,
        *,
        what: str,
        unreachable_hint: str,
        schema_hint: str,
        connect_timeout_s: float = 3.0,
        retry_after_s: float = 15.0,
        max_size: int = 3,
    ) -> None:
        self.conninfo = libpq_url(url)
        self.what = what
        self.unreachable_hint = unreachable_hint
        self.schema_hint = schema_hint
        self.connect_timeout_s = connect_timeout_s
        self.retry_after_s = retry_after_s
        self.max_size = max_size
        self._pool: ConnectionPool | None = None
        self._lock = threading.Lock()
        self._down: tuple[float, DatabaseUnavailable] | None = None

    @property
    def address(self) -> str:
        return redact_url(self.conninfo)

    def _unavailable(self, reason: str) -> DatabaseUnavailable:
        err = DatabaseUnavailable(
            f"{self.what} not reachable at {self.address} ({reason}): {self.unreachable_hint}."
        )
        self._down = (time.monotonic() + self.retry_after_s, err)
        return err

    def _probe(self) -> str:
        """Why a connection fails, in the server's or libpq's words."""
        try:
            psycopg.connect(self.conninfo, connect_timeout=max(1, int(self.connect_timeout_s))).close()
        except psycopg.Error as exc:
            return str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return "timed out waiting for a connection"

    def _get_pool(self) -> ConnectionPool:
        with self._lock:
            down = self._down
            if down is not None and time.monotonic() < down[0]:
                raise down[1]
            if self._pool is None:
                pool = ConnectionPool(
                    self.conninfo,
                    min_size=1,
                    max_size=self.max_size,
                    open=False,
                    check=ConnectionPool.check_connection,
                    name=self.what,
                    kwargs={
                        "autocommit": True,
                        "connect_timeout": max(1, int(self.connect_timeout_s)),
                        "application_name": "clickstream-dashboard",
                        "options": "-c default_transaction_read_only=on -c statement_timeout=30s",
                    },
                )
                try:
                    pool.open(wait=True, timeout=self.connect_timeout_s)
                except PoolTimeout:
                    pool.close(timeout=1.0)
                    raise self._unavailable(self._probe()) from None
                self._pool = pool
                self._down = None
            return self._pool

    def _drop_pool(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(timeout=1.0)

    def fetch(
        self, query: str, params: Mapping[str, object] | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        pool = self._get_pool()
        try:
            with pool.connection(timeout=self.connect_timeout_s) as conn, conn.cursor() as cur:
                cur.execute(query, params)
                columns = [c.name for c in cur.description or []]
                return columns, cur.fetchall()
        except errors.UndefinedTable as exc:
            missing = exc.diag.message_primary or str(exc)
            raise SchemaMissing(f"{self.what} at {self.address}: {missing}: {self.schema_hint}.") from exc
        except errors.QueryCanceled as exc:
            raise DashboardError(f"{self.what}: a query took too long and was cancelled ({exc}).") from exc
        except (PoolTimeout, psycopg.OperationalError) as exc:
            self._drop_pool()  # a fresh pool on the next attempt, after the server is back
            raise self._unavailable(str(exc).strip().splitlines()[-1] if str(exc).strip() else "") from exc

    def frame(self, query: str, params: Mapping[str, object] | None = None) -> pd.DataFrame:
        columns, rows = self.fetch(query, params)
        return pd.DataFrame.from_records(rows, columns=columns)

    def close(self) -> None:
        self._drop_pool()


@dataclass
class Sources:
    """Where the page reads from: the events database and Dagster's webserver."""

    events: Database
    dagster: DagsterWebserver

    def close(self) -> None:
        self.events.close()
        self.dagster.close()


def source_urls(cfg: Settings) -> tuple[str, str]:
    """The libpq URL of the events database (DATABASE_URL or the local stack's) and Dagster's webserver URL
    (CLICKSTREAM_DAGSTER_URL or the local stack's)."""
    return libpq_url(cfg.database_url), cfg.dagster_url


def connect(events_url: str, dagster_url: str) -> Sources:
    return Sources(
        events=Database(
            events_url,
            what="Events database",
            unreachable_hint=EVENTS_UNREACHABLE_HINT,
            schema_hint=EVENTS_SCHEMA_HINT,
        ),
        dagster=DagsterWebserver(dagster_url, user_agent="clickstream-dashboard"),
    )


# ---- helpers the pages share ---------------------------------------------------------------------------------


def category_text(path: Sequence[int] | None) -> str:
    """A category path as stored (leaf first) shown root first: `250 > 1213 > 1338`."""
    if path is None or len(path) == 0:
        return ""
    return " > ".join(str(c) for c in reversed(list(path)))


def int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
