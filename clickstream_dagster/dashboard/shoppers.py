"""The "Shoppers" page's loaders: the funnel, sessions over time, cart abandonment, retention, and the items
and categories that convert beside those that are only looked at (the views of `analytics.sessions`)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from clickstream_dagster.dashboard.sources import Database, category_text
from clickstream_dagster.sql import dashboard as sql

# Label -> (grain, lookback from the newest period or None for everything).
# The first is the page's default: a recent range, whose cost does not grow with the history (each hour's
# median session length reads that hour's histogram: the default stays short, longer ranges on demand).
SESSION_RANGES: dict[str, tuple[str, str | None]] = {
    "Last 48 hours, per hour": ("hour", "48 hours"),
    "Last 14 days, per hour": ("hour", "14 days"),
    "Everything, per day": ("day", None),
}
MIN_VIEWING_SESSIONS = 5  # an item or category needs this many viewing sessions to rank by conversion


@dataclass(frozen=True)
class Funnel:
    """Sessions at each step, over every session."""

    sessions: int
    viewed: int
    carted: int
    bought: int
    viewed_carted: int
    carted_bought: int
    viewed_bought: int
    all_steps: int  # viewed, added to cart and bought
    abandoned: int
    bounced: int

    @staticmethod
    def rate(part: int, whole: int) -> float | None:
        return part / whole if whole else None

    @property
    def view_to_cart(self) -> float | None:
        return self.rate(self.viewed_carted, self.viewed)

    @property
    def cart_to_purchase(self) -> float | None:
        return self.rate(self.carted_bought, self.carted)

    @property
    def view_to_purchase(self) -> float | None:
        return self.rate(self.viewed_bought, self.viewed)

    @property
    def abandonment(self) -> float | None:
        return self.rate(self.abandoned, self.carted)

    @property
    def bounce(self) -> float | None:
        return self.rate(self.bounced, self.sessions)


def funnel(db: Database) -> Funnel:
    _, rows = db.fetch(sql.FUNNEL_TOTALS)
    return Funnel(*(int(v) for v in rows[0]))


def sessions_over_time(db: Database, range_label: str) -> pd.DataFrame:
    grain, lookback = SESSION_RANGES[range_label]
    df = db.frame(sql.SESSIONS_OVER_TIME, {"grain": grain, "lookback": lookback})
    for column in ("bounce_rate", "median_minutes", "cart_abandonment_rate", "view_to_purchase_rate"):
        df[column] = pd.to_numeric(df[column], errors="coerce").astype("float64")
    return df


def retention(db: Database, weeks: int = 12) -> pd.DataFrame:
    """The newest `weeks` cohorts: one row per (cohort week, weeks after) with the share active."""
    df = db.frame(sql.RETENTION_MATRIX, {"weeks": weeks})
    df["active_share"] = pd.to_numeric(df["active_share"]).astype("float64")
    return df


def top_items(db: Database, limit: int = 10) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the items that convert best, the most viewed), each with its category path."""
    frames = []
    for query in (sql.TOP_CONVERTING_ITEMS, sql.TOP_VIEWED_ITEMS):
        df = db.frame(query, {"limit": limit, "min_views": MIN_VIEWING_SESSIONS})
        df["category"] = [category_text(p) for p in df["category_path"]]
        df["view_to_purchase_rate"] = pd.to_numeric(df["view_to_purchase_rate"]).astype("float64")
        frames.append(df.drop(columns=["category_path"]))
    return frames[0], frames[1]


def categories(db: Database, limit: int = 15) -> pd.DataFrame:
    """The most viewed categories with their conversion (categoryid -1: items without a known category)."""
    df = db.frame(sql.CATEGORY_CONVERSION, {"limit": limit, "min_views": MIN_VIEWING_SESSIONS})
    df["view_to_purchase_rate"] = pd.to_numeric(df["view_to_purchase_rate"]).astype("float64")
    df["category"] = ["unknown" if c == -1 else str(c) for c in df["categoryid"]]
    return df
