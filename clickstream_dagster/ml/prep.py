"""From raw events to training data: cleaning (every step counted), interactions, sparse matrices.

Inputs are pandas frames shaped like the PostgreSQL tables:
- events (clickstream_events): timestamp (epoch ms), visitorid, event, itemid, transactionid;
- items: itemid, categoryid, available, category_path (the item's category and its ancestors).

Cleaning steps, in order, each counted in the returned dict (materialization metadata):
1. rows with a missing timestamp, visitorid, event or itemid, or an event type outside view/addtocart/
   transaction (`missing_values`, `unknown_event_type`);
2. exact duplicate rows over all five columns (`duplicate_events`);
3. implausible visitors (bots): more than `max_events_per_day` events in any 24 hours or
   `max_events_per_hour` in any 60 minutes, or more views than the `bot_view_quantile` of all visitors
   (and at least `bot_min_views`) while (almost) never adding to cart (`bot_visitors_*`, `bot_events`);
4. minimum support (`apply_min_support`, a separate call so the caller chooses which events it counts on):
   items with fewer than `min_item_events` events, then visitors with fewer than `min_visitor_events`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp

from clickstream_dagster.events import EVENT_TYPES
from clickstream_dagster.ml.config import CleaningConfig, InteractionConfig

logger = logging.getLogger(__name__)

EVENT_COLUMNS: tuple[str, ...] = ("timestamp", "visitorid", "event", "itemid", "transactionid")
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def normalize_events(events: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """The five event columns with fixed dtypes; rows that cannot be typed are dropped and counted."""
    missing_cols = [c for c in EVENT_COLUMNS if c not in events.columns and c != "transactionid"]
    if missing_cols:
        raise ValueError(
            f"events frame lacks column(s) {missing_cols}; expected the clickstream_events columns "
            f"{list(EVENT_COLUMNS)}"
        )
    n_in = len(events)
    frame = pd.DataFrame(
        {
            "timestamp": pd.to_numeric(events["timestamp"], errors="coerce"),
            "visitorid": pd.to_numeric(events["visitorid"], errors="coerce"),
            "event": events["event"],
            "itemid": pd.to_numeric(events["itemid"], errors="coerce"),
            "transactionid": pd.to_numeric(
                events["transactionid"] if "transactionid" in events.columns else pd.Series(np.nan),
                errors="coerce",
            ),
        }
    )
    missing = frame[["timestamp", "visitorid", "event", "itemid"]].isna().any(axis=1).to_numpy()
    unknown = ~missing & ~frame["event"].isin(EVENT_TYPES).to_numpy()
    frame = frame.loc[~(missing | unknown)]
    out = pd.DataFrame(
        {
            "timestamp": frame["timestamp"].to_numpy(dtype=np.int64),
            "visitorid": frame["visitorid"].to_numpy(dtype=np.int64),
            "event": pd.Categorical(frame["event"].astype(str), categories=list(EVENT_TYPES)),
            "itemid": frame["itemid"].to_numpy(dtype=np.int64),
            "transactionid": frame["transactionid"].astype("Int64").array,
        }
    )
    counts = {"rows_in": n_in, "missing_values": int(missing.sum()), "unknown_event_type": int(unknown.sum())}
    return out, counts


def max_events_in_window(visitors: IntArray, ts: IntArray, window_ms: int) -> IntArray:
    """For every event, how many events its visitor has in the `window_ms` starting at it (a sliding
    window, so bursts straddling a clock hour or a midnight still count whole)."""
    if len(ts) == 0:
        return np.zeros(0, dtype=np.int64)
    _, v = np.unique(visitors, return_inverse=True)
    t = ts - ts.min()
    stride = int(t.max()) + window_ms + 1
    key = v.astype(np.int64) * stride + t  # sorts by visitor, then time; windows never cross visitors
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    out = np.empty(len(ts), dtype=np.int64)
    out[order] = np.searchsorted(sorted_key, sorted_key + window_ms, side="left") - np.arange(len(ts))
    return out


def find_bots(events: pd.DataFrame, cfg: CleaningConfig) -> tuple[IntArray, dict[str, int]]:
    """Visitor ids with implausible activity (see the module docstring) and the count per rule."""
    ts = events["timestamp"].to_numpy()
    visitors = events["visitorid"].to_numpy()

    busy_day = np.unique(visitors[max_events_in_window(visitors, ts, DAY_MS) > cfg.max_events_per_day])
    busy_hour = np.unique(visitors[max_events_in_window(visitors, ts, HOUR_MS) > cfg.max_events_per_hour])

    codes = events["event"].cat.codes.to_numpy()
    per_visitor = pd.DataFrame({"v": visitors, "view": codes == 0, "cart": codes == 1}).groupby("v").sum()
    views = per_visitor["view"].to_numpy(dtype=np.float64)
    threshold = float(np.quantile(views, cfg.bot_view_quantile)) if len(views) else np.inf
    cart_rate = per_visitor["cart"].to_numpy() / np.maximum(views, 1.0)
    threshold = max(threshold, float(cfg.bot_min_views))
    heavy = per_visitor.index[(views > threshold) & (cart_rate < cfg.bot_max_cart_rate)].to_numpy(
        dtype=np.int64
    )
    bots = np.union1d(np.union1d(busy_day, busy_hour), heavy)
    counts = {
        "bot_visitors": len(bots),
        "bot_visitors_events_per_day": len(busy_day),
        "bot_visitors_events_per_hour": len(busy_hour),
        "bot_visitors_views_no_carts": len(heavy),
        "bot_view_threshold": int(threshold) if np.isfinite(threshold) else 0,
    }
    return bots, counts


def clean_events(
    events: pd.DataFrame, cfg: CleaningConfig | None = None
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Typed events without missing values, exact duplicates and bots, sorted by time; plus the counts."""
    cfg = cfg or CleaningConfig()
    frame, counts = normalize_events(events)
    before = len(frame)
    frame = frame.drop_duplicates(ignore_index=True)
    counts["duplicate_events"] = before - len(frame)
    bots, bot_counts = find_bots(frame, cfg)
    counts.update(bot_counts)
    is_bot = np.isin(frame["visitorid"].to_numpy(), bots)
    counts["bot_events"] = int(is_bot.sum())
    frame = frame.loc[~is_bot]
    frame = frame.sort_values(["timestamp", "visitorid", "itemid"], kind="stable", ignore_index=True)
    counts["rows_out"] = len(frame)
    logger.info(
        "cleaning: %d rows in, %d missing, %d unknown type, %d duplicates, %d bots (%d events), %d out",
        counts["rows_in"],
        counts["missing_values"],
        counts["unknown_event_type"],
        counts["duplicate_events"],
        counts["bot_visitors"],
        counts["bot_events"],
        counts["rows_out"],
    )
    return frame, counts


def apply_min_support(
    events: pd.DataFrame, cfg: CleaningConfig | None = None
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop items with fewer than `min_item_events` events, then visitors with fewer than
    `min_visitor_events` (one pass each, in that order); returns the events kept and the counts."""
    cfg = cfg or CleaningConfig()
    items = events["itemid"].to_numpy()
    _, inverse, n = np.unique(items, return_inverse=True, return_counts=True)
    keep = n[inverse] >= cfg.min_item_events
    counts = {"items_below_support": int((n < cfg.min_item_events).sum())}
    counts["item_support_events"] = int((~keep).sum())
    frame = events.loc[keep]
    visitors = frame["visitorid"].to_numpy()
    _, inverse, n = np.unique(visitors, return_inverse=True, return_counts=True)
    keep = n[inverse] >= cfg.min_visitor_events
    counts["visitors_below_support"] = int((n < cfg.min_visitor_events).sum())
    counts["visitor_support_events"] = int((~keep).sum())
    frame = frame.loc[keep].reset_index(drop=True)
    counts["support_rows_out"] = len(frame)
    logger.info(
        "support: %d items (%d events) and %d visitors (%d events) below support, %d rows kept",
        counts["items_below_support"],
        counts["item_support_events"],
        counts["visitors_below_support"],
        counts["visitor_support_events"],
        len(frame),
    )
    return frame, counts


def event_weights(events: pd.DataFrame, cfg: InteractionConfig, ref_ms: int | None = None) -> FloatArray:
    """Each event's weight: its type's weight times 0.5 ** (age / half-life) before `ref_ms`."""
    unknown = set(EVENT_TYPES) - set(cfg.event_weights)
    if unknown:
        raise ValueError(f"event_weights lacks {sorted(unknown)}; give a weight for every event type")
    per_type = np.array([cfg.event_weights[t] for t in EVENT_TYPES], dtype=np.float64)
    weight = per_type[events["event"].cat.codes.to_numpy()]
    if cfg.half_life_days is not None and len(events):
        ts = events["timestamp"].to_numpy()
        ref = int(ts.max()) if ref_ms is None else ref_ms
        age_days = np.maximum(ref - ts, 0) / DAY_MS
        weight = weight * np.exp2(-age_days / cfg.half_life_days)
    return weight


def build_interactions(
    events: pd.DataFrame, cfg: InteractionConfig | None = None, ref_ms: int | None = None
) -> pd.DataFrame:
    """One row per (visitor, item): weight (decayed, type-weighted sum), views, carts, purchases, first/last
    timestamps. `ref_ms` is the instant ages are measured from (default: the newest event)."""
    cfg = cfg or InteractionConfig()
    codes = events["event"].cat.codes.to_numpy()
    frame = pd.DataFrame(
        {
            "visitorid": events["visitorid"].to_numpy(),
            "itemid": events["itemid"].to_numpy(),
            "weight": event_weights(events, cfg, ref_ms),
            "views": (codes == 0).astype(np.int64),
            "carts": (codes == 1).astype(np.int64),
            "purchases": (codes == 2).astype(np.int64),
            "first_ts": events["timestamp"].to_numpy(),
            "last_ts": events["timestamp"].to_numpy(),
        }
    )
    out = frame.groupby(["visitorid", "itemid"], sort=True).agg(
        weight=("weight", "sum"),
        views=("views", "sum"),
        carts=("carts", "sum"),
        purchases=("purchases", "sum"),
        first_ts=("first_ts", "min"),
        last_ts=("last_ts", "max"),
    )
    return out.reset_index()


@dataclass
class InteractionMatrix:
    """Visitors x items, with the id mappings. `weights` holds interaction strengths, `purchased` is 1 where
    the visitor bought the item (used to exclude it from recommendations)."""

    user_ids: IntArray  # sorted external visitor ids; row i is user_ids[i]
    item_ids: IntArray  # sorted external item ids; column j is item_ids[j]
    weights: sp.csr_matrix
    purchased: sp.csr_matrix

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.user_ids), len(self.item_ids)

    @classmethod
    def from_interactions(
        cls, interactions: pd.DataFrame, item_ids: IntArray | None = None
    ) -> InteractionMatrix:
        """From `build_interactions` output; `item_ids` fixes the item axis (rows of other items are
        dropped), else it is every item present."""
        users = np.unique(interactions["visitorid"].to_numpy(dtype=np.int64))
        items = (
            np.unique(interactions["itemid"].to_numpy(dtype=np.int64))
            if item_ids is None
            else np.unique(np.asarray(item_ids, dtype=np.int64))
        )
        col = index_of(items, interactions["itemid"].to_numpy(dtype=np.int64))
        ok = col >= 0
        row = np.searchsorted(users, interactions["visitorid"].to_numpy(dtype=np.int64)[ok])
        col = col[ok]
        shape = (len(users), len(items))
        weights = sp.csr_matrix(
            (interactions["weight"].to_numpy(dtype=np.float32)[ok], (row, col)), shape=shape
        )
        bought = interactions["purchases"].to_numpy()[ok] > 0
        purchased = sp.csr_matrix(
            (np.ones(int(bought.sum()), dtype=np.float32), (row[bought], col[bought])), shape=shape
        )
        weights.sum_duplicates()
        purchased.sum_duplicates()
        return cls(users, items, weights, purchased)

    def user_index(self, visitor_ids: npt.ArrayLike) -> IntArray:
        return index_of(self.user_ids, visitor_ids)

    def item_index(self, item_ids: npt.ArrayLike) -> IntArray:
        return index_of(self.item_ids, item_ids)


def index_of(sorted_ids: IntArray, ids: npt.ArrayLike) -> IntArray:
    """Positions of `ids` in the sorted unique `sorted_ids`, -1 where absent."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(sorted_ids) == 0:
        return np.full(ids.shape, -1, dtype=np.int64)
    pos = np.searchsorted(sorted_ids, ids)
    pos = np.minimum(pos, len(sorted_ids) - 1)
    return np.where(sorted_ids[pos] == ids, pos, -1).astype(np.int64)


def events_to_matrix(
    events: pd.DataFrame, cfg: InteractionConfig | None = None, ref_ms: int | None = None
) -> tuple[pd.DataFrame, InteractionMatrix]:
    """`build_interactions` and the matrix over the visitors and items present."""
    interactions = build_interactions(events, cfg, ref_ms)
    return interactions, InteractionMatrix.from_interactions(interactions)


# --- the items table from the reference files (tests and benches; the items asset owns the real one) ----


def items_table(category_tree: pd.DataFrame, item_properties: pd.DataFrame) -> pd.DataFrame:
    """The items table (itemid, categoryid, available, category_path) from category_tree and
    item_properties frames: latest categoryid and available snapshots, and the path [category, parent,
    ..., root]. Mirrors what the reference assets load into PostgreSQL."""
    parent = {
        int(c): (None if pd.isna(p) else int(p))
        for c, p in zip(category_tree["categoryid"], category_tree["parentid"], strict=True)
    }

    def path_of(category: int) -> list[int]:
        path = [category]
        node = parent.get(category)
        while node is not None and node not in path:
            path.append(node)
            node = parent.get(node)
        return path

    props = item_properties.loc[item_properties["property"].isin(["categoryid", "available"])]
    latest = props.sort_values("timestamp", kind="stable").drop_duplicates(
        ["itemid", "property"], keep="last"
    )
    wide = latest.pivot(index="itemid", columns="property", values="value")
    wide = wide.reindex(columns=["categoryid", "available"])  # a property never seen becomes all-NaN
    category = pd.to_numeric(wide["categoryid"], errors="coerce").astype("Int64")
    available = pd.to_numeric(wide["available"], errors="coerce")
    paths = {c: path_of(c) for c in category.dropna().unique().tolist()}
    return pd.DataFrame(
        {
            "itemid": wide.index.to_numpy(dtype=np.int64),
            "categoryid": category.to_numpy(),
            "available": (available == 1).where(available.notna()).astype("boolean").to_numpy(),
            "category_path": [None if pd.isna(c) else paths[int(c)] for c in category],
        }
    )


def read_csv_dir(raw_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(events, items) frames from a folder of RetailRocket CSVs (the real download or the generator's)."""
    raw_dir = Path(raw_dir)
    event_types: dict[str, Any] = {
        "timestamp": np.int64,
        "visitorid": np.int64,
        "event": str,
        "itemid": np.int64,
    }
    events = pd.read_csv(raw_dir / "events.csv", dtype=event_types)
    tree_types: dict[str, Any] = {"categoryid": np.int64, "parentid": "Int64"}
    tree = pd.read_csv(raw_dir / "category_tree.csv", dtype=tree_types)
    parts = sorted(raw_dir.glob("item_properties_part*.csv"))
    property_types: dict[str, Any] = {
        "timestamp": np.int64,
        "itemid": np.int64,
        "property": str,
        "value": str,
    }
    wanted: list[pd.DataFrame] = []
    for part in parts:  # the real files hold 20M rows: keep only the two properties the items table needs
        for chunk in pd.read_csv(
            part,
            dtype=property_types,
            chunksize=2_000_000,
        ):
            wanted.append(chunk.loc[chunk["property"].isin(["categoryid", "available"])])
    props = pd.concat(wanted, ignore_index=True)
    return events, items_table(tree, props)
