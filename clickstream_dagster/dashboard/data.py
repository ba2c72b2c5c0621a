"""Data access for the dashboard: a small connection pool for the events database, Dagster's webserver through
its GraphQL API, and one loader per page section.

Loaders take a `Database` (or, for `dagster_health`, a `DagsterWebserver`) and return a DataFrame or a small
dataclass (picklable, so Streamlit can cache them). A database that is down or not migrated raises a
`DashboardError` whose message says what to run; the page shows it as a note. Dagster is optional:
`dagster_health` turns an unreachable webserver or a GraphQL error into a note. Plain HTTP and JSON, no
Dagster import.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pandas as pd
import psycopg
from psycopg import errors
from psycopg_pool import ConnectionPool, PoolTimeout

from clickstream_dagster.analytics.windows import WINDOW_INTERVAL, WINDOW_MS, WINDOW_SECONDS
from clickstream_dagster.dashboard import dagster_queries
from clickstream_dagster.events import EVENT_TYPES
from clickstream_dagster.settings import Settings, libpq_url, redact_url
from clickstream_dagster.sql import dashboard as sql

# What raw_events records in its materialization metadata (clickstream_dagster/assets/ingestion.py).
RAW_EVENTS_ASSET = "raw_events"
LAG_METADATA_KEY = "consumer_lag_after_run"
ROW_COUNT_METADATA_KEY = "dagster/row_count"
INGEST_METADATA_KEYS = ("messages_read", "rows_inserted", "rows_quarantined")

WINDOW = pd.Timedelta(milliseconds=WINDOW_MS)
# Label -> (lookback from the newest window or None for everything, bucket the windows are summed into).
WINDOW_RANGES: dict[str, tuple[str | None, str]] = {
    "Everything, per day": (None, "1 day"),
    "Last 7 days, per hour": ("7 days", "1 hour"),
    f"Last 24 hours, {WINDOW_SECONDS // 60}-minute windows": ("24 hours", WINDOW_INTERVAL),
    f"Last 6 hours, {WINDOW_SECONDS // 60}-minute windows": ("6 hours", WINDOW_INTERVAL),
}
POPULAR_LIST = "popular"

EVENTS_UNREACHABLE_HINT = "start the local stack with `make up` (or `make demo`), or set DATABASE_URL"
EVENTS_SCHEMA_HINT = "apply the migrations with `clickstream up` (or `make demo`)"
DAGSTER_UNREACHABLE_HINT = (
    "start Dagster with `make up` (or `clickstream up`), or set CLICKSTREAM_DAGSTER_URL to its webserver"
)
RUNS_SINCE_S = 24 * 3600  # the run counts cover the runs created in the last 24 hours


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


class WebserverUnavailable(DashboardError):
    pass


class DagsterWebserver:
    """Dagster's webserver, read through its public GraphQL endpoint (`<url>/graphql`) with plain HTTP.

    As with `Database`, when it does not answer the page is told so at once for `retry_after_s` instead of
    waiting for the connect timeout on every rerun. GraphQL errors (a query the server rejects, a
    PythonError from its storage) become a `DashboardError` with the server's message."""

    what = "Dagster webserver"

    def __init__(
        self,
        url: str,
        *,
        unreachable_hint: str = DAGSTER_UNREACHABLE_HINT,
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 20.0,
        retry_after_s: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.unreachable_hint = unreachable_hint
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.retry_after_s = retry_after_s
        self._client = httpx.Client(
            timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s),
            headers={"User-Agent": "clickstream-dashboard"},
        )
        self._lock = threading.Lock()
        self._down: tuple[float, WebserverUnavailable] | None = None

    @property
    def address(self) -> str:
        return redact_url(self.url)

    @property
    def graphql_url(self) -> str:
        return f"{self.url}/graphql"

    def _unavailable(self, reason: str) -> WebserverUnavailable:
        err = WebserverUnavailable(
            f"{self.what} not reachable at {self.address} ({reason}): {self.unreachable_hint}."
        )
        with self._lock:
            self._down = (time.monotonic() + self.retry_after_s, err)
        return err

    def query(self, document: str, variables: Mapping[str, object] | None = None) -> dict[str, Any]:
        """The `data` of a GraphQL query; raises `DashboardError` when there is none to use."""
        with self._lock:
            down = self._down
        if down is not None and time.monotonic() < down[0]:
            raise down[1]
        try:
            response = self._client.post(
                self.graphql_url, json={"query": document, "variables": dict(variables or {})}
            )
        except httpx.ConnectTimeout:
            raise self._unavailable(f"no connection within {self.connect_timeout_s:g} s") from None
        except httpx.TimeoutException:
            raise self._unavailable(f"no answer within {self.read_timeout_s:g} s") from None
        except httpx.TransportError as exc:
            raise self._unavailable(str(exc) or type(exc).__name__) from None
        with self._lock:
            self._down = None
        try:
            body = response.json()
        except ValueError:
            body = None
        return graphql_data(body, response.status_code, self.address)

    def close(self) -> None:
        self._client.close()


def _first_line(text: object, limit: int = 300) -> str:
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def graphql_data(body: object, status: int, address: str) -> dict[str, Any]:
    """The `data` of a GraphQL response body, or a `DashboardError` naming the first error."""
    if not isinstance(body, Mapping):
        raise DashboardError(
            f"{DagsterWebserver.what} at {address} answered HTTP {status} without a GraphQL response: "
            "is CLICKSTREAM_DAGSTER_URL the address of Dagster's webserver?"
        )
    problems = body.get("errors")
    if problems:
        first = problems[0] if isinstance(problems, list) and isinstance(problems[0], Mapping) else {}
        path = ".".join(str(p) for p in first.get("path") or [])
        raise DashboardError(
            f"{DagsterWebserver.what} at {address} could not answer the dashboard's query"
            f"{f' ({path})' if path else ''}: {_first_line(first.get('message', problems))}"
        )
    data = body.get("data")
    if not isinstance(data, Mapping):
        raise DashboardError(f"{DagsterWebserver.what} at {address} answered HTTP {status} without data.")
    return dict(data)


def graphql_result(
    data: Mapping[str, Any], field: str, typename: str, address: str, *, absent: str | None = None
) -> Mapping[str, Any] | None:
    """A union field of `data` that must be `typename` (None when it is `absent`, e.g. AssetNotFoundError);
    an error member (PythonError, ...) becomes a `DashboardError` with its message."""
    result = data.get(field)
    kind = result.get("__typename") if isinstance(result, Mapping) else None
    if kind == typename and isinstance(result, Mapping):
        return result
    if absent is not None and kind == absent:
        return None
    message = result.get("message") if isinstance(result, Mapping) else None
    raise DashboardError(
        f"{DagsterWebserver.what} at {address} answered `{field}` with {kind or 'nothing'}"
        f"{f': {_first_line(message)}' if message else ''}."
    )


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
        dagster=DagsterWebserver(dagster_url),
    )


# ---- pure helpers ------------------------------------------------------------------------------------------


def category_text(path: Sequence[int] | None) -> str:
    """A category path as stored (leaf first) shown root first: `250 > 1213 > 1338`."""
    if path is None or len(path) == 0:
        return ""
    return " > ".join(str(c) for c in reversed(list(path)))


def asset_name(path: Sequence[str]) -> str:
    """An asset key as the UI writes it: `["ml", "model"]` -> `ml/model`."""
    return "/".join(str(p) for p in path)


def metadata_values(entries: Sequence[Mapping[str, Any]] | None) -> dict[str, Any]:
    """A materialization's numeric metadata from GraphQL `metadataEntries` (IntMetadataEntry.intRepr,
    FloatMetadataEntry.floatRepr), by label; entries of other kinds are left out."""
    out: dict[str, Any] = {}
    for entry in entries or []:
        label, kind = entry.get("label"), entry.get("__typename")
        try:
            if kind == "IntMetadataEntry":
                out[str(label)] = int(entry["intRepr"])
            elif kind == "FloatMetadataEntry":
                out[str(label)] = float(entry["floatRepr"])
        except (KeyError, TypeError, ValueError):
            continue
    return out


def epoch_ms(value: object) -> pd.Timestamp | None:
    """A GraphQL event timestamp (milliseconds since the epoch, as a string) as a UTC timestamp."""
    try:
        return pd.Timestamp(int(float(str(value))), unit="ms", tz="UTC")
    except (TypeError, ValueError):
        return None


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _numeric_leaves(
    tree: Mapping[str, Any], prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], float]]:
    out: list[tuple[tuple[str, ...], float]] = []
    for key, value in tree.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping):
            out.extend(_numeric_leaves(value, path))
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out.append((path, float(value)))
    return out


def metrics_long(
    version: int, status: str, model_type: str, metrics: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """A registry row's metrics as rows (version, status, split, model, metric, value).

    `validation` and `test` may hold metrics directly (then they are the registry's model type's) or one
    mapping per model; other sections (such as `gate`) are not metrics of a model and are left out.
    """
    rows: list[dict[str, Any]] = []
    for split in ("validation", "test"):
        section = (metrics or {}).get(split)
        if not isinstance(section, Mapping):
            continue
        for path, value in _numeric_leaves(section):
            model, metric = (model_type, path[0]) if len(path) == 1 else (path[0], "/".join(path[1:]))
            # The gate's validation section names the candidate (this row's own model) and the
            # configuration of the model that was promoted when it was trained.
            model = {"candidate": model_type, "champion": "promoted model"}.get(model, model)
            rows.append(
                {
                    "version": version,
                    "status": status,
                    "split": split,
                    "model": model,
                    "metric": metric,
                    "value": value,
                }
            )
    return rows


# ---- live traffic ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Totals:
    events: int
    quarantined: int
    last_event_time: datetime | None
    last_ingested_at: datetime | None


def totals(db: Database) -> Totals:
    _, rows = db.fetch(sql.EVENT_TOTALS)
    events, last_event_time, last_ingested_at, quarantined = rows[0]
    return Totals(int(events), int(quarantined), last_event_time, last_ingested_at)


def event_statistics(db: Database) -> pd.DataFrame:
    df = db.frame(sql.EVENT_STATISTICS)
    total = df["event_count"].sum() if len(df) else 0
    df["share"] = df["event_count"] / total if total else 0.0
    return df


def hourly_pattern(db: Database) -> pd.DataFrame:
    """Events per hour of day (UTC) and event type, with each type's share of its own events per hour."""
    df = db.frame(sql.HOURLY_PATTERN)
    if df.empty:
        return pd.DataFrame(columns=["hour", "event", "events", "share"])
    events = sorted(set(df["event"]), key=lambda e: (EVENT_TYPES.index(e) if e in EVENT_TYPES else 99, e))
    grid = pd.MultiIndex.from_product([range(24), events], names=["hour", "event"])
    full = df.set_index(["hour", "event"]).reindex(grid, fill_value=0).reset_index()
    full["events"] = full["events"].astype("int64")
    per_type = full.groupby("event")["events"].transform("sum")
    full["share"] = (full["events"] / per_type).where(per_type > 0, 0.0)
    return full


def windowed_stats(db: Database, range_label: str) -> pd.DataFrame:
    """Buckets of windows per event type; a bucket without events is there with zeros (not interpolated)."""
    lookback, bucket = WINDOW_RANGES[range_label]
    df = db.frame(sql.WINDOWED_STATS, {"lookback": lookback, "bucket": bucket})
    if df.empty:
        return df
    starts = pd.date_range(df["bucket_start"].min(), df["bucket_start"].max(), freq=pd.Timedelta(bucket))
    grid = pd.MultiIndex.from_product([starts, sorted(set(df["event"]))], names=["bucket_start", "event"])
    full = df.set_index(["bucket_start", "event"]).reindex(grid, fill_value=0).reset_index()
    return full.astype({c: "int64" for c in ("events", "unique_users", "unique_items", "windows")})


@dataclass(frozen=True)
class WindowSummary:
    windows: int
    events: int
    first_window: datetime | None
    last_window: datetime | None
    updated_at: datetime | None


def windowed_summary(db: Database) -> WindowSummary:
    _, rows = db.fetch(sql.WINDOWED_STATS_SUMMARY)
    windows, events, first, last, updated = rows[0]
    return WindowSummary(int(windows), int(events), first, last, updated)


def top_items(db: Database, limit: int = 10) -> pd.DataFrame:
    df = db.frame(sql.TOP_ITEMS, {"limit": limit})
    df["category"] = [category_text(p) for p in df["category_path"]]
    return df.drop(columns=["category_path"])


# ---- pipeline health ---------------------------------------------------------------------------------------


def quarantine_by_reason(db: Database) -> pd.DataFrame:
    return db.frame(sql.QUARANTINE_BY_REASON)


@dataclass(frozen=True)
class Reconciliation:
    by_partition: pd.DataFrame
    mismatched: pd.DataFrame
    gaps: pd.DataFrame  # gaps the sensor found and requested again; `open` while not covered yet

    @property
    def open_gaps(self) -> int:
        return int(self.gaps["open"].sum()) if len(self.gaps) else 0

    @property
    def ranges(self) -> int:
        return int(self.by_partition["ranges"].sum()) if len(self.by_partition) else 0

    @property
    def mismatched_ranges(self) -> int:
        return int(self.by_partition["mismatched_ranges"].sum()) if len(self.by_partition) else 0

    def total(self, column: str) -> int:
        return int(self.by_partition[column].sum()) if len(self.by_partition) else 0


def reconciliation(db: Database, limit: int = 50) -> Reconciliation:
    return Reconciliation(
        by_partition=db.frame(sql.RECONCILIATION_BY_PARTITION),
        mismatched=db.frame(sql.MISMATCHED_RANGES, {"limit": limit}),
        gaps=db.frame(sql.REPAIRED_GAPS, {"limit": limit}),
    )


@dataclass(frozen=True)
class DagsterHealth:
    address: str  # Dagster's webserver
    note: str | None  # why Dagster could not be read; None when it could
    assets: pd.DataFrame  # asset, materialized_at, run_id, rows
    raw_events: pd.DataFrame  # newest first: materialized_at, run_id, lag, messages_read, ...
    runs: pd.DataFrame  # status, runs (created in the last 24 hours)

    @property
    def available(self) -> bool:
        return self.note is None

    @property
    def kafka_lag(self) -> int | None:
        if self.raw_events.empty:
            return None
        return _int_or_none(self.raw_events["lag"].iloc[0])


ASSET_COLUMNS = ["asset", "materialized_at", "run_id", "rows"]
RAW_EVENTS_COLUMNS = ["materialized_at", "run_id", "lag", *INGEST_METADATA_KEYS]
RUN_COLUMNS = ["status", "runs"]


def _materializations(result: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    events = (result or {}).get("assetMaterializations") or []
    return [e for e in events if isinstance(e, Mapping)]


def dagster_health(webserver: DagsterWebserver, recent: int = 200) -> DagsterHealth:
    """Per asset its newest materialization, raw_events' recent ones with their metadata, and the runs of
    the last 24 hours per status, in one GraphQL query."""
    address = webserver.address
    try:
        data = webserver.query(
            dagster_queries.DAGSTER_HEALTH,
            {
                "rawEvents": {"path": RAW_EVENTS_ASSET.split("/")},
                "recent": recent,
                "createdAfter": time.time() - RUNS_SINCE_S,
            },
        )
        assets = graphql_result(data, "assetsOrError", "AssetConnection", address)
        raw = graphql_result(data, "rawEvents", "Asset", address, absent="AssetNotFoundError")
        counts = {s: graphql_result(data, s, "Runs", address) for s in dagster_queries.RUN_STATUSES}
    except DashboardError as exc:
        empty = pd.DataFrame()
        return DagsterHealth(address, str(exc), empty, empty, empty)

    asset_rows = []
    for node in (assets or {}).get("nodes") or []:
        newest = _materializations(node)[:1]
        if not newest:  # defined, never materialized (or wiped)
            continue
        meta = metadata_values(newest[0].get("metadataEntries"))
        asset_rows.append(
            {
                "asset": asset_name((node.get("key") or {}).get("path") or []),
                "materialized_at": epoch_ms(newest[0].get("timestamp")),
                "run_id": newest[0].get("runId") or None,
                "rows": _int_or_none(meta.get(ROW_COUNT_METADATA_KEY)),
            }
        )
    raw_rows = []
    for event in _materializations(raw):
        meta = metadata_values(event.get("metadataEntries"))
        raw_rows.append(
            {
                "materialized_at": epoch_ms(event.get("timestamp")),
                "run_id": event.get("runId") or None,
                "lag": _int_or_none(meta.get(LAG_METADATA_KEY)),
                **{k: _int_or_none(meta.get(k)) for k in INGEST_METADATA_KEYS},
            }
        )
    run_rows = [
        {"status": status, "runs": int(result["count"])}
        for status, result in sorted(counts.items())
        if result is not None and _int_or_none(result.get("count"))
    ]
    return DagsterHealth(
        address=address,
        note=None,
        assets=pd.DataFrame(asset_rows, columns=ASSET_COLUMNS).sort_values("asset", ignore_index=True),
        raw_events=pd.DataFrame(raw_rows, columns=RAW_EVENTS_COLUMNS)
        .sort_values("materialized_at", ascending=False, kind="stable")
        .reset_index(drop=True),
        runs=pd.DataFrame(run_rows, columns=RUN_COLUMNS),
    )


# ---- models and recommendations ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Registry:
    models: pd.DataFrame  # one row per version: version, model_type, status, reason, trained_at, decided_at
    metrics: pd.DataFrame  # long: version, status, split, model, metric, value


EVIDENCE_COLUMNS = ("gate metric", "validation estimate", "interval low", "interval high", "visitors")


def gate_evidence(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    """The gate's evidence a registry row stores: its metric, the validation estimate with its bootstrap
    interval and the number of validation visitors (empty for rows registered before the gate had one)."""
    evidence = (metrics or {}).get("evidence")
    estimate = evidence.get("candidate", {}).get("estimate") if isinstance(evidence, Mapping) else None
    if not isinstance(estimate, Mapping):
        return dict.fromkeys(EVIDENCE_COLUMNS)
    return dict(
        zip(
            EVIDENCE_COLUMNS,
            (
                (metrics or {}).get("metric"),
                estimate.get("mean"),
                estimate.get("low"),
                estimate.get("high"),
                _int_or_none(estimate.get("visitors")),
            ),
            strict=True,
        )
    )


def model_registry(db: Database) -> Registry:
    df = db.frame(sql.MODEL_REGISTRY)
    rows: list[dict[str, Any]] = []
    evidence: list[dict[str, Any]] = []
    for version, model_type, status, _, metrics, *_ in df.itertuples(index=False, name=None):
        rows.extend(metrics_long(int(version), status, model_type, metrics))
        evidence.append(gate_evidence(metrics))
    long = pd.DataFrame(rows, columns=["version", "status", "split", "model", "metric", "value"])
    models = df.drop(columns=["metrics"])
    models = pd.concat(
        [models, pd.DataFrame(evidence, columns=list(EVIDENCE_COLUMNS), index=models.index)], axis=1
    )
    return Registry(models=models, metrics=long)


def registry_table(registry: Registry) -> pd.DataFrame:
    """One row per version with the test metrics of its own model type beside status and reason."""
    models = registry.models.copy()
    if models.empty:
        return models
    own = registry.metrics.merge(models[["version", "model_type"]], on="version")
    own = own[(own["split"] == "test") & (own["model"] == own["model_type"])]
    if not own.empty:
        wide = own.pivot_table(index="version", columns="metric", values="value", aggfunc="first")
        wide.columns = [f"test {c}" for c in wide.columns]
        models = models.merge(wide, left_on="version", right_index=True, how="left")
    return models


def recommended_visitors(db: Database, limit: int = 500) -> pd.DataFrame:
    return db.frame(sql.RECOMMENDED_VISITORS, {"limit": limit})


def recommendation_coverage(db: Database) -> tuple[int, int | None]:
    _, rows = db.fetch(sql.RECOMMENDATION_COVERAGE)
    visitors, version = rows[0]
    return int(visitors), _int_or_none(version)


@dataclass(frozen=True)
class VisitorHistory:
    events: int  # all of the visitor's events
    recent: pd.DataFrame  # the newest ones


def visitor_history(db: Database, visitorid: int, limit: int = 25) -> VisitorHistory:
    _, rows = db.fetch(sql.VISITOR_EVENT_COUNT, {"visitorid": visitorid})
    return VisitorHistory(
        events=int(rows[0][0]), recent=db.frame(sql.VISITOR_HISTORY, {"visitorid": visitorid, "limit": limit})
    )


def visitor_recommendations(db: Database, visitorid: int) -> pd.DataFrame:
    df = db.frame(sql.VISITOR_RECOMMENDATIONS, {"visitorid": visitorid})
    df["category"] = [category_text(p) for p in df["category_path"]]
    return df.drop(columns=["category_path"])


def popular_items(db: Database, limit: int = 10, list_name: str = POPULAR_LIST) -> pd.DataFrame:
    df = db.frame(sql.POPULAR_ITEMS, {"list": list_name, "limit": limit})
    df["category"] = [category_text(p) for p in df["category_path"]]
    return df.drop(columns=["category_path"])
