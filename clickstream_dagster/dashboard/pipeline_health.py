"""The "Pipeline health" page's loaders: quarantine, the ledger's reconciliation and repaired gaps (events
database), and Dagster's view (the newest materializations, raw_events' metadata, runs per status) through
its GraphQL API, where an unreachable webserver or a GraphQL error becomes a note."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from clickstream_dagster.clients import dagster_queries
from clickstream_dagster.clients.dagster import DagsterError, DagsterWebserver, graphql_result
from clickstream_dagster.dashboard.sources import Database, int_or_none
from clickstream_dagster.sql import dashboard as sql

# What raw_events records in its materialization metadata (clickstream_dagster/assets/ingestion.py).
RAW_EVENTS_ASSET = "raw_events"
LAG_METADATA_KEY = "consumer_lag_after_run"
ROW_COUNT_METADATA_KEY = "dagster/row_count"
INGEST_METADATA_KEYS = ("messages_read", "rows_inserted", "rows_quarantined")
RUNS_SINCE_S = 24 * 3600  # the run counts cover the runs created in the last 24 hours


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
        return int_or_none(self.raw_events["lag"].iloc[0])


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
    except DagsterError as exc:
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
                "rows": int_or_none(meta.get(ROW_COUNT_METADATA_KEY)),
            }
        )
    raw_rows = []
    for event in _materializations(raw):
        meta = metadata_values(event.get("metadataEntries"))
        raw_rows.append(
            {
                "materialized_at": epoch_ms(event.get("timestamp")),
                "run_id": event.get("runId") or None,
                "lag": int_or_none(meta.get(LAG_METADATA_KEY)),
                **{k: int_or_none(meta.get(k)) for k in INGEST_METADATA_KEYS},
            }
        )
    run_rows = [
        {"status": status, "runs": int(result["count"])}
        for status, result in sorted(counts.items())
        if result is not None and int_or_none(result.get("count"))
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
