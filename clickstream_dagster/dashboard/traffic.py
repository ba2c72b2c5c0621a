"""The "Live traffic" page's loaders: totals, the windows, event types, the hourly pattern, the top items."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd

from clickstream_dagster.analytics.windows import WINDOW_INTERVAL, WINDOW_MS, WINDOW_SECONDS
from clickstream_dagster.dashboard.sources import Database, category_text
from clickstream_dagster.events import EVENT_TYPES
from clickstream_dagster.sql import dashboard as sql

WINDOW = pd.Timedelta(milliseconds=WINDOW_MS)
# Label -> (lookback from the newest window or None for everything, bucket the windows are summed into). The
# first is the page's default: a recent range, whose cost does not grow with the history ("Everything" does).
WINDOW_RANGES: dict[str, tuple[str | None, str]] = {
    "Last 7 days, per hour": ("7 days", "1 hour"),
    "Everything, per day": (None, "1 day"),
    f"Last 24 hours, {WINDOW_SECONDS // 60}-minute windows": ("24 hours", WINDOW_INTERVAL),
    f"Last 6 hours, {WINDOW_SECONDS // 60}-minute windows": ("6 hours", WINDOW_INTERVAL),
}


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


HOURLY_PATTERN_DAYS = 28  # the time-of-day pattern covers the last four weeks of windows
TOP_ITEMS_HOURS = 24  # the top items are those of the last day of event time
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def hourly_pattern(db: Database) -> pd.DataFrame:
    """Events per hour of day (UTC) and event type over the last `HOURLY_PATTERN_DAYS` days of windows, with
    each type's share of its own events per hour."""
    df = db.frame(sql.HOURLY_PATTERN, {"days": HOURLY_PATTERN_DAYS})
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
    """The items with the most events in the last `TOP_ITEMS_HOURS` hours of event time."""
    _, rows = db.fetch(sql.NEWEST_EVENT_TIME)
    newest = rows[0][0] if rows else None
    if newest is None:
        return pd.DataFrame(
            columns=[
                "itemid",
                "events",
                "views",
                "addtocarts",
                "transactions",
                "categoryid",
                "available",
                "category",
            ]
        )
    since = newest - timedelta(hours=TOP_ITEMS_HOURS)
    df = db.frame(sql.TOP_ITEMS, {"limit": limit, "since_ms": (since - EPOCH) // timedelta(milliseconds=1)})
    df["category"] = [category_text(p) for p in df["category_path"]]
    return df.drop(columns=["category_path"])
