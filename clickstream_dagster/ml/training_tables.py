"""The training tables, rebuilt from an `MLDataset`: ml_interactions (one row per split, visitor and item) and
the feature tables ml_visitor_features, ml_item_features and ml_hourly_profile.

Each table is emptied and refilled by binary COPY in the caller's transaction, so readers see the old rows
until it commits.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
import psycopg
from psycopg.rows import class_row

from clickstream_dagster.events import EVENT_TYPES
from clickstream_dagster.ml.dataset import MLDataset
from clickstream_dagster.ml.features import hourly_profile, item_stats, visitor_features
from clickstream_dagster.ml.prep import build_interactions
from clickstream_dagster.sql import ml as q
from clickstream_dagster.sql.copy import copy_frame, copy_rows

INTERACTION_COLUMNS = ("visitorid", "itemid", "weight", "views", "carts", "purchases", "first_ts", "last_ts")


@dataclass(frozen=True)
class SplitCounts:
    """One split of ml_interactions (`INTERACTIONS_BY_SPLIT`)."""

    split: str
    interactions: int
    visitors: int
    items: int
    first_ts: int
    last_ts: int


def write_interactions(conn: psycopg.Connection, dataset: MLDataset) -> list[SplitCounts]:
    """Replace ml_interactions with the interactions of train, validation and test (event-type weights
    decayed by age at the newest event); the counts per split as written, oldest split first."""
    with conn.cursor() as cur:
        cur.execute(q.DELETE_INTERACTIONS)
        copy_rows(cur, q.COPY_INTERACTIONS, q.INTERACTION_TYPES, _interaction_rows(dataset))
    with conn.cursor(row_factory=class_row(SplitCounts)) as cur:
        return cur.execute(q.INTERACTIONS_BY_SPLIT).fetchall()


def _interaction_rows(dataset: MLDataset) -> Iterator[tuple[object, ...]]:
    split = dataset.split
    ref_ms = int(dataset.events["timestamp"].max())
    for name, events in (("train", split.train), ("validation", split.validation), ("test", split.test)):
        table = build_interactions(events, dataset.params.interactions, ref_ms)
        columns = [table[c].to_numpy().tolist() for c in INTERACTION_COLUMNS]
        for row in zip(*columns, strict=True):
            yield (name, *row)


@dataclass(frozen=True)
class FeatureTables:
    visitors: pd.DataFrame  # ml_visitor_features
    items: pd.DataFrame  # ml_item_features: item_stats with categoryid, category_path, available
    hourly: pd.DataFrame  # hour, <event>_events, <event>_share: one row per hour of day (UTC)

    @property
    def hourly_rows(self) -> list[tuple[int, str, int, float]]:
        """ml_hourly_profile's rows: (hour, event, events, share)."""
        return [
            (int(r["hour"]), event, int(r[f"{event}_events"]), float(r[f"{event}_share"]))
            for r in self.hourly.to_dict("records")
            for event in EVENT_TYPES
        ]

    @property
    def items_with_category(self) -> int:
        return int(self.items["categoryid"].notna().sum())

    @property
    def peak_view_hour(self) -> int:
        """The hour of day (UTC) with the most views (0 without events)."""
        if not len(self.hourly):
            return 0
        return int(self.hourly["hour"].to_numpy()[self.hourly["view_events"].to_numpy().argmax()])

    @property
    def median_cart_rate(self) -> float:
        return float(self.visitors["cart_rate"].median()) if len(self.visitors) else 0.0


def build_feature_tables(dataset: MLDataset) -> FeatureTables:
    """Visitor behaviour, item popularity and trend (with category and availability when items are known)
    and the time-of-day profile, over all cleaned events."""
    events = dataset.events
    items = item_stats(events)
    if dataset.items is not None:
        items = items.merge(dataset.items, on="itemid", how="left")
        items["categoryid"] = items["categoryid"].astype("Int64")
    else:
        items = items.assign(categoryid=None, category_path=None, available=None)
    return FeatureTables(visitor_features(events), items, hourly_profile(events))


def write_feature_tables(conn: psycopg.Connection, tables: FeatureTables) -> None:
    """Replace ml_visitor_features, ml_item_features and ml_hourly_profile."""
    with conn.cursor() as cur:
        cur.execute(q.DELETE_VISITOR_FEATURES)
        copy_frame(
            cur, q.COPY_VISITOR_FEATURES, q.VISITOR_FEATURE_TYPES, tables.visitors, q.VISITOR_FEATURE_COLUMNS
        )
        cur.execute(q.DELETE_ITEM_FEATURES)
        copy_frame(cur, q.COPY_ITEM_FEATURES, q.ITEM_FEATURE_TYPES, tables.items, q.ITEM_FEATURE_COLUMNS)
        cur.execute(q.DELETE_HOURLY_PROFILE)
        copy_rows(cur, q.COPY_HOURLY_PROFILE, q.HOURLY_PROFILE_TYPES, tables.hourly_rows)
