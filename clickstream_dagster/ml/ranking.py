"""Pure helpers that turn a trained model into the rows of the serving tables.

- `recommendations_for_visitors`: top-N per visitor (recommendations table), never an item the visitor
  bought in the training window, nor anything in `exclude` / `exclude_items`;
- `similar_items`: for every catalogue item, its top-k nearest items (similar_items table), never itself:
  by LightFM's item embeddings, item-based CF's neighbours, or the bundle's item neighbourhood;
- `popular_items`: the fallback lists for visitors without history (popular_items table): `popular`
  (distinct visitors in the last `window_days`) and `trending` (recent rate over earlier rate).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp

from clickstream_dagster.ml.bundle import ModelBundle
from clickstream_dagster.ml.features import item_stats
from clickstream_dagster.ml.models import (
    ItemKNNRecommender,
    LightFMRecommender,
    Recommender,
    batch_rows,
    top_k,
    top_k_per_row,
    unit_rows,
)
from clickstream_dagster.ml.prep import DAY_MS, IntArray


def active_visitors(events: pd.DataFrame, since_ms: int) -> IntArray:
    """Visitors with at least one event at or after `since_ms`, sorted."""
    recent = events.loc[events["timestamp"].to_numpy() >= since_ms, "visitorid"]
    return np.unique(recent.to_numpy(dtype=np.int64))


def recommendations_for_visitors(
    model: Recommender,
    visitor_ids: npt.ArrayLike,
    n: int = 20,
    exclude: Mapping[int, Collection[int]] | None = None,
    exclude_items: Collection[int] | None = None,
    known_only: bool = True,
) -> pd.DataFrame:
    """Rows (visitorid, rank, itemid, score). With `known_only`, visitors the model has not seen are left
    out: they would all get the same popularity list, which `popular_items` already serves."""
    visitors = np.unique(np.asarray(visitor_ids, dtype=np.int64))
    if known_only:
        visitors = visitors[np.isin(visitors, model.user_ids)]
    return model.recommend(visitors, n, exclude=exclude, exclude_items=exclude_items)


def similar_items(source: ModelBundle | Recommender, k: int = 20) -> pd.DataFrame:
    """Rows (itemid, rank, similar_itemid, score) for every item of the model (or the bundle's model), never
    the item itself: by cosine of the item embeddings (LightFM), the model's own neighbours (item-based CF),
    or the item neighbourhood stored with the bundle (the other types)."""
    model = source.model if isinstance(source, ModelBundle) else source
    if isinstance(model, LightFMRecommender):
        return embedding_neighbours(model, k)
    stored = getattr(source, "item_neighbours", None) if isinstance(source, ModelBundle) else None
    neighbours = model.similarity if isinstance(model, ItemKNNRecommender) else stored
    if neighbours is None:
        raise ValueError(f"the {model.name} bundle holds no item neighbourhood for similar items")
    return neighbour_rows(model.item_ids, top_k_per_row(neighbours.tocsr(), k))


def neighbour_rows(item_ids: IntArray, neighbours: sp.csr_matrix) -> pd.DataFrame:
    """Rows (itemid, rank, similar_itemid, score) of an items x items matrix holding each item's neighbours,
    best first (ties: the lower item id)."""
    coo = neighbours.tocoo()
    frame = pd.DataFrame(
        {"row": coo.row, "itemid": item_ids[coo.row], "similar_itemid": item_ids[coo.col], "score": coo.data}
    )
    frame = frame.loc[(frame["itemid"] != frame["similar_itemid"]) & (frame["score"] > 0)]
    frame = frame.sort_values(["row", "score", "similar_itemid"], ascending=[True, False, True])
    frame["rank"] = frame.groupby("row").cumcount() + 1
    return frame[["itemid", "rank", "similar_itemid", "score"]].reset_index(drop=True)


def embedding_neighbours(
    model: LightFMRecommender, k: int = 20, batch_size: int | None = None
) -> pd.DataFrame:
    """Rows (itemid, rank, similar_itemid, score) for every item of the model: the `k` items whose
    embeddings have the highest cosine similarity, excluding the item itself."""
    emb = unit_rows(model.item_embeddings)
    n = len(emb)
    k = min(k, n - 1)
    batch_size = batch_size or batch_rows(n)
    frames: list[pd.DataFrame] = []
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        sims = emb[lo:hi] @ emb.T
        sims[np.arange(hi - lo), np.arange(lo, hi)] = -np.inf
        top, scores = top_k(sims, k)
        frames.append(
            pd.DataFrame(
                {
                    "itemid": np.repeat(model.item_ids[lo:hi], k),
                    "rank": np.tile(np.arange(1, k + 1), hi - lo),
                    "similar_itemid": model.item_ids[top.ravel()],
                    "score": scores.ravel(),
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=["itemid", "rank", "similar_itemid", "score"])
    return pd.concat(frames, ignore_index=True)


def popular_items(
    events: pd.DataFrame,
    ref_ms: int | None = None,
    n: int = 100,
    window_days: float = 30.0,
    recent_days: float = 7.0,
    baseline_days: float = 28.0,
    min_recent_events: int = 3,
    exclude_items: Collection[int] | None = None,
) -> pd.DataFrame:
    """Rows (list, rank, itemid, score, visitors, recent_events, earlier_events, trend) for two lists:
    `popular` ranks by distinct visitors in the `window_days` before `ref_ms`; `trending` ranks items with
    at least `min_recent_events` in the last `recent_days` by `trend` (see `features.item_stats`)."""
    ref = int(events["timestamp"].max()) if ref_ms is None else ref_ms
    ts = events["timestamp"].to_numpy()
    window = events.loc[(ts > ref - window_days * DAY_MS) & (ts <= ref)]
    stats = item_stats(window, ref, recent_days, min(baseline_days, max(window_days - recent_days, 1.0)))
    if exclude_items:
        stats = stats.loc[~stats["itemid"].isin(list(exclude_items))]
    cols = ["itemid", "visitors", "recent_events", "earlier_events", "trend"]
    popular = stats.sort_values(["visitors", "events", "itemid"], ascending=[False, False, True]).head(n)
    popular = popular[cols].assign(list="popular", score=popular["visitors"].astype(np.float64))
    rising = stats.loc[stats["recent_events"] >= min_recent_events]
    rising = rising.sort_values(["trend", "recent_events", "itemid"], ascending=[False, False, True]).head(n)
    rising = rising[cols].assign(list="trending", score=rising["trend"].astype(np.float64))
    out = []
    for frame in (popular, rising):
        out.append(frame.assign(rank=np.arange(1, len(frame) + 1)))
    return pd.concat(out, ignore_index=True)[
        ["list", "rank", "itemid", "score", "visitors", "recent_events", "earlier_events", "trend"]
    ]
