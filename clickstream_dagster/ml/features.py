"""Features: visitor behaviour, item popularity and trend, time-of-day profile, and LightFM item features
from the category tree and availability.

All times are epoch milliseconds, and hours of day are UTC. `ref_ms` is the instant recency is measured
from; it defaults to the newest event given, so features of a training window never look past it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp

from clickstream_dagster.events import EVENT_TYPES
from clickstream_dagster.ml.prep import DAY_MS, HOUR_MS, IntArray, index_of

SESSION_GAP_MS = 30 * 60_000


def _codes(events: pd.DataFrame) -> npt.NDArray[np.integer[Any]]:
    return events["event"].cat.codes.to_numpy()


def _ref(events: pd.DataFrame, ref_ms: int | None) -> int:
    return int(events["timestamp"].max()) if ref_ms is None else ref_ms


def visitor_features(events: pd.DataFrame, ref_ms: int | None = None) -> pd.DataFrame:
    """Per visitor: recency, frequency (events, sessions, active days), distinct items, cart and purchase
    rates per view, active hours (distinct UTC hours of day) and peak hour."""
    ref = _ref(events, ref_ms)
    codes = _codes(events)
    ts = events["timestamp"].to_numpy()
    frame = pd.DataFrame(
        {
            "visitorid": events["visitorid"].to_numpy(),
            "timestamp": ts,
            "itemid": events["itemid"].to_numpy(),
            "view": codes == 0,
            "cart": codes == 1,
            "purchase": codes == 2,
            "day": ts // DAY_MS,
            "hour": (ts // HOUR_MS) % 24,
        }
    ).sort_values(["visitorid", "timestamp"], kind="stable")
    v = frame["visitorid"].to_numpy()
    t = frame["timestamp"].to_numpy()
    new_session = np.r_[True, (v[1:] != v[:-1]) | (np.diff(t) > SESSION_GAP_MS)]
    frame["new_session"] = new_session
    g = frame.groupby("visitorid", sort=True)
    out = g.agg(
        events=("timestamp", "size"),
        views=("view", "sum"),
        carts=("cart", "sum"),
        purchases=("purchase", "sum"),
        sessions=("new_session", "sum"),
        distinct_items=("itemid", "nunique"),
        active_days=("day", "nunique"),
        active_hours=("hour", "nunique"),
        first_ts=("timestamp", "min"),
        last_ts=("timestamp", "max"),
    )
    per_hour = frame.groupby(["visitorid", "hour"]).size().rename("n").reset_index()
    peak = per_hour.sort_values(["visitorid", "n", "hour"], ascending=[True, False, True], kind="stable")
    out["peak_hour"] = peak.drop_duplicates("visitorid").set_index("visitorid")["hour"]
    views = np.maximum(out["views"].to_numpy(dtype=np.float64), 1.0)
    out["cart_rate"] = out["carts"].to_numpy() / views
    out["purchase_rate"] = out["purchases"].to_numpy() / views
    out["recency_days"] = (ref - out["last_ts"].to_numpy()) / DAY_MS
    out["tenure_days"] = (out["last_ts"].to_numpy() - out["first_ts"].to_numpy()) / DAY_MS
    return out.reset_index()


def item_stats(
    events: pd.DataFrame, ref_ms: int | None = None, recent_days: float = 7.0, baseline_days: float = 28.0
) -> pd.DataFrame:
    """Per item: popularity (events, views, carts, purchases, distinct visitors), conversion, and trend:
    the event rate in the last `recent_days` over the rate in the `baseline_days` before that, both with
    one pseudo-event so that new and dying items stay finite."""
    ref = _ref(events, ref_ms)
    codes = _codes(events)
    ts = events["timestamp"].to_numpy()
    recent_start = ref - recent_days * DAY_MS
    baseline_start = recent_start - baseline_days * DAY_MS
    frame = pd.DataFrame(
        {
            "itemid": events["itemid"].to_numpy(),
            "visitorid": events["visitorid"].to_numpy(),
            "view": codes == 0,
            "cart": codes == 1,
            "purchase": codes == 2,
            "recent": (ts > recent_start) & (ts <= ref),
            "earlier": (ts > baseline_start) & (ts <= recent_start),
            "last_ts": ts,
        }
    )
    out = frame.groupby("itemid", sort=True).agg(
        events=("view", "size"),
        views=("view", "sum"),
        carts=("cart", "sum"),
        purchases=("purchase", "sum"),
        visitors=("visitorid", "nunique"),
        recent_events=("recent", "sum"),
        earlier_events=("earlier", "sum"),
        last_ts=("last_ts", "max"),
    )
    out["conversion"] = out["purchases"].to_numpy() / np.maximum(out["views"].to_numpy(dtype=np.float64), 1.0)
    recent_rate = (out["recent_events"].to_numpy() + 1.0) / recent_days
    earlier_rate = (out["earlier_events"].to_numpy() + 1.0) / baseline_days
    out["trend"] = recent_rate / earlier_rate
    return out.reset_index()


def hourly_profile(events: pd.DataFrame) -> pd.DataFrame:
    """Time-of-day pattern: events per UTC hour and type, and each hour's share of the type's events."""
    hour = (events["timestamp"].to_numpy() // HOUR_MS) % 24
    counts = (
        pd.crosstab(pd.Series(hour, name="hour"), pd.Series(events["event"].to_numpy(), name="event"))
        .reindex(index=range(24), columns=list(EVENT_TYPES), fill_value=0)
        .astype(np.int64)
    )
    shares = counts / counts.sum(axis=0).replace(0, 1)
    out = counts.add_suffix("_events").join(shares.add_suffix("_share"))
    out.index.name = "hour"
    return out.reset_index()


# --- LightFM item features -------------------------------------------------------------------------------


@dataclass
class ItemFeatures:
    """Rows follow `item_ids` (a model's item axis); `names` labels the columns."""

    item_ids: IntArray
    matrix: sp.csr_matrix
    names: list[str]

    def rows_for(self, item_ids: IntArray) -> sp.csr_matrix:
        idx = index_of(self.item_ids, item_ids)
        if (idx < 0).any():
            raise KeyError(f"{int((idx < 0).sum())} items have no feature row")
        return self.matrix[idx]


def item_feature_matrix(
    item_ids: IntArray,
    items: pd.DataFrame | None,
    identity_weight: float = 1.0,
    category_weight: float = 1.0,
    availability_weight: float = 0.1,
    normalize: bool = True,
) -> ItemFeatures:
    """LightFM item features for `item_ids` (sorted): an identity column per item (what makes the model
    hybrid rather than content-only), one column per category on the item's path (its category and every
    ancestor; together they weigh `category_weight`), and `available` or `unavailable`. Items unknown to
    `items` get the identity column only. With `normalize` every row then sums to 1, as in LightFM's own
    Dataset. `identity_weight=0` gives a content-only model."""
    item_ids = np.asarray(item_ids, dtype=np.int64)
    n = len(item_ids)
    rows: list[IntArray] = []
    cols: list[IntArray] = []
    vals: list[npt.NDArray[np.float32]] = []
    names: list[str] = []
    if identity_weight > 0:
        rows.append(np.arange(n, dtype=np.int64))
        cols.append(np.arange(n, dtype=np.int64))
        vals.append(np.full(n, identity_weight, dtype=np.float32))
        names.extend(f"item:{i}" for i in item_ids)
    if items is not None and len(items):
        known = items.loc[items["itemid"].isin(item_ids)].drop_duplicates("itemid")
        pos = np.searchsorted(item_ids, known["itemid"].to_numpy(dtype=np.int64))
        path_rows: list[int] = []
        path_cats: list[int] = []
        for p, path, cat in zip(pos, known["category_path"], known["categoryid"], strict=True):
            cats = set() if not _is_list(path) else {int(c) for c in path}
            if not pd.isna(cat):
                cats.add(int(cat))
            path_rows.extend([int(p)] * len(cats))
            path_cats.extend(sorted(cats))
        if category_weight > 0:  # else no category columns at all (LightFM visits every stored entry)
            categories = np.unique(np.asarray(path_cats, dtype=np.int64))
            r = np.asarray(path_rows, dtype=np.int64)
            per_item = np.bincount(r, minlength=n)
            rows.append(r)
            cols.append(len(names) + np.searchsorted(categories, np.asarray(path_cats, dtype=np.int64)))
            vals.append((category_weight / np.maximum(per_item[r], 1)).astype(np.float32))
            names.extend(f"category:{c}" for c in categories)
        available = known["available"].astype("boolean")
        is_true = available.fillna(False).to_numpy(dtype=bool)
        is_false = (~available).fillna(False).to_numpy(dtype=bool)
        if availability_weight > 0:
            rows.extend([pos[is_true], pos[is_false]])
            cols.extend(
                [np.full(int(is_true.sum()), len(names)), np.full(int(is_false.sum()), len(names) + 1)]
            )
            vals.append(np.full(int(is_true.sum() + is_false.sum()), availability_weight, dtype=np.float32))
            names.extend(["available", "unavailable"])
    matrix = sp.csr_matrix(
        (_concat(vals, np.float32), (_concat(rows, np.int64), _concat(cols, np.int64))), shape=(n, len(names))
    )
    if normalize:
        sums = np.asarray(matrix.sum(axis=1)).ravel()
        matrix = sp.csr_matrix(sp.diags(1.0 / np.where(sums > 0, sums, 1.0)) @ matrix, dtype=np.float32)
    return ItemFeatures(item_ids, matrix, names)


def _is_list(value: object) -> bool:
    return isinstance(value, list | tuple | np.ndarray)


def _concat(parts: list[npt.NDArray[Any]], dtype: type) -> npt.NDArray[Any]:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)
