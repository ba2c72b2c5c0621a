"""Next-item evaluation in the session protocol of Ludewig et al. (UMUAI 2021), on our time split.

Protocol (as in DATA.md, with one deliberate difference: a single split at the test cut point t85 instead
of 5 sliding windows of 25 + 2 days):
1. views only, from the cleaned log (bots removed);
2. items with at least 5 views over the log are kept (Ludewig et al. filter before splitting);
3. sessions: per visitor, a gap of more than 30 minutes starts a new one; sessions with fewer than 2 views
   are dropped;
4. train sessions end before t85, test sessions start at or after it (sessions spanning it are dropped);
   test views of items absent from train sessions are removed, then test sessions with fewer than 2 views;
5. for every test session s and position i >= 1, each predictor ranks the whole train-session catalogue
   given s[:i] and is scored on s[i]: HR@20 and MRR@20 (see `metrics`). Repeated views stay in the
   sessions, as in the original data (`collapse_repeats` merges consecutive repeats of one item, to show
   how much of a score comes from predicting the item already on screen).

Predictors (all rank the same catalogue):
- `pop`: views per item in train sessions;
- `markov`: first-order transitions last item -> next item counted in train sessions;
- `sknn`: session kNN (Jannach & Ludewig 2017): cosine between the binary item sets of the current prefix
  and every train session, top-k neighbour sessions, an item scores the sum of the similarities of the
  neighbours holding it (all train sessions are candidates; the original samples recent ones);
- `item_knn`: the item-based CF model's neighbour matrix, queried with the prefix's items weighted by
  recency (the last item 1, the one before 1/2, ...);
- `lightfm_emb`: cosine similarity of LightFM item embeddings to the same recency-weighted sum of the
  prefix items' unit embeddings.
The model-based predictors come from models fitted on train + validation events, i.e. also before t85.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp

from clickstream_dagster.ml.config import SessionConfig
from clickstream_dagster.ml.metrics import batch_target_ranks
from clickstream_dagster.ml.models import (
    ItemKNNRecommender,
    LightFMRecommender,
    ScoreMatrix,
    batch_rows,
    top_k_per_row,
    unit_rows,
)
from clickstream_dagster.ml.prep import IntArray, index_of

logger = logging.getLogger(__name__)


def sessionize(events: pd.DataFrame, gap_minutes: float = 30.0) -> pd.DataFrame:
    """Views with a `session` number: per visitor, a gap of more than `gap_minutes` starts a new one.
    Columns: session, visitorid, timestamp, itemid, sorted by session then time."""
    views = events.loc[events["event"] == "view", ["visitorid", "timestamp", "itemid"]]
    views = views.sort_values(["visitorid", "timestamp"], kind="stable", ignore_index=True)
    v = views["visitorid"].to_numpy()
    t = views["timestamp"].to_numpy()
    new = (
        np.r_[True, (v[1:] != v[:-1]) | (np.diff(t) > gap_minutes * 60_000)] if len(v) else np.zeros(0, bool)
    )
    views.insert(0, "session", np.cumsum(new) - 1)
    return views


@dataclass
class SessionData:
    """Train and test sessions over one item catalogue (`item_ids`, sorted)."""

    train: pd.DataFrame  # session, visitorid, timestamp, itemid, item (catalogue index)
    test: pd.DataFrame
    item_ids: IntArray
    counts: dict[str, int] = field(default_factory=dict)


def _drop_short(sessions: pd.DataFrame, min_events: int) -> pd.DataFrame:
    size = sessions.groupby("session")["itemid"].transform("size")
    return sessions.loc[size.to_numpy() >= min_events].reset_index(drop=True)


def session_data(events: pd.DataFrame, test_start_ms: int, cfg: SessionConfig | None = None) -> SessionData:
    """Steps 1-4 of the protocol above."""
    cfg = cfg or SessionConfig()
    views = events.loc[events["event"] == "view"]
    counts: dict[str, int] = {"views": len(views)}
    item_views = views["itemid"].value_counts()
    supported = item_views.index[item_views.to_numpy() >= cfg.min_item_events]
    views = views.loc[views["itemid"].isin(supported)]
    counts["views_of_supported_items"] = len(views)
    sessions = sessionize(views, cfg.gap_minutes)
    if cfg.collapse_repeats:
        s, i = sessions["session"].to_numpy(), sessions["itemid"].to_numpy()
        repeat = np.r_[False, (s[1:] == s[:-1]) & (i[1:] == i[:-1])]
        counts["collapsed_repeat_views"] = int(repeat.sum())
        sessions = sessions.loc[~repeat]
    sessions = _drop_short(sessions, cfg.min_session_events)
    bounds = sessions.groupby("session")["timestamp"].agg(["min", "max"])
    is_train = sessions["session"].map(bounds["max"] < test_start_ms).to_numpy(dtype=bool)
    is_test = sessions["session"].map(bounds["min"] >= test_start_ms).to_numpy(dtype=bool)
    counts["sessions"] = len(bounds)
    counts["sessions_spanning_cut"] = int(
        ((bounds["min"] < test_start_ms) & (bounds["max"] >= test_start_ms)).sum()
    )
    train = sessions.loc[is_train].reset_index(drop=True)
    item_ids = np.unique(train["itemid"].to_numpy(dtype=np.int64))
    test = sessions.loc[is_test]
    test = test.loc[test["itemid"].isin(item_ids)]
    test = _drop_short(test, cfg.min_session_events)
    train["item"] = index_of(item_ids, train["itemid"].to_numpy())
    test["item"] = index_of(item_ids, test["itemid"].to_numpy())
    counts.update(
        train_sessions=int(train["session"].nunique()),
        train_views=len(train),
        test_sessions=int(test["session"].nunique()),
        test_views=len(test),
        catalogue_items=len(item_ids),
    )
    logger.info(
        "sessions: %d train (%d views), %d test (%d views), %d items",
        counts["train_sessions"],
        counts["train_views"],
        counts["test_sessions"],
        counts["test_views"],
        counts["catalogue_items"],
    )
    return SessionData(train, test, item_ids, counts)


def session_matrix(sessions: pd.DataFrame, n_items: int) -> sp.csr_matrix:
    """Sessions x items, 1 where the session viewed the item (rows in session order)."""
    _, row = np.unique(sessions["session"].to_numpy(), return_inverse=True)
    m = sp.csr_matrix(
        (np.ones(len(row), dtype=np.float32), (row, sessions["item"].to_numpy())),
        shape=(int(row.max(initial=-1)) + 1, n_items),
    )
    m.data[:] = 1.0
    return m


@dataclass
class Prefixes:
    """Every (prefix, next item) pair of the test sessions. `query` rows hold the prefix's items with
    recency weights (last item 1, the one before 1/2, ...), summed over repeats."""

    query: sp.csr_matrix
    last: IntArray
    target: IntArray
    length: IntArray


def build_prefixes(test: pd.DataFrame, n_items: int) -> Prefixes:
    items = test["item"].to_numpy(dtype=np.int64)
    sess = test["session"].to_numpy()
    starts = np.flatnonzero(np.r_[True, sess[1:] != sess[:-1]])
    lengths = np.diff(np.r_[starts, len(items)])
    rows: list[IntArray] = []
    cols: list[IntArray] = []
    vals: list[npt.NDArray[np.float32]] = []
    last: list[IntArray] = []
    target: list[IntArray] = []
    plen: list[IntArray] = []
    row0 = 0
    # One vectorized block per session length keeps this fast without a Python loop per prefix.
    for length in np.unique(lengths):
        s = starts[lengths == length]
        m = len(s)
        for i in range(1, int(length)):  # prefix length i: items s..s+i-1, target s+i
            pos = s[:, None] + np.arange(i)[None, :]
            rows.append(np.repeat(np.arange(row0, row0 + m), i))
            cols.append(items[pos].ravel())
            vals.append(np.tile((1.0 / np.arange(i, 0, -1)).astype(np.float32), m))
            last.append(items[s + i - 1])
            target.append(items[s + i])
            plen.append(np.full(m, i))
            row0 += m
    n = row0
    data = np.concatenate(vals) if vals else np.zeros(0, np.float32)
    query = sp.csr_matrix((data, (_concat(rows), _concat(cols))), shape=(n, n_items))
    query.sum_duplicates()
    return Prefixes(query, _concat(last), _concat(target), _concat(plen))


def _concat(parts: list[IntArray]) -> IntArray:
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


class SessionPredictor(ABC):
    name: str = "predictor"

    def fit(self, train: pd.DataFrame, item_ids: IntArray) -> SessionPredictor:
        self.item_ids = item_ids
        self._fit(train, len(item_ids))
        return self

    @abstractmethod
    def _fit(self, train: pd.DataFrame, n_items: int) -> None: ...

    @abstractmethod
    def predict(self, query: sp.csr_matrix, last: IntArray) -> ScoreMatrix:
        """Scores over the catalogue for each prefix (rows of `query`, last items `last`)."""


class PopularityPredictor(SessionPredictor):
    name = "pop"

    def _fit(self, train: pd.DataFrame, n_items: int) -> None:
        self.counts = np.bincount(train["item"].to_numpy(), minlength=n_items).astype(np.float32)

    def predict(self, query: sp.csr_matrix, last: IntArray) -> ScoreMatrix:
        return np.tile(self.counts, (query.shape[0], 1))


class MarkovPredictor(SessionPredictor):
    name = "markov"

    def _fit(self, train: pd.DataFrame, n_items: int) -> None:
        items = train["item"].to_numpy()
        sess = train["session"].to_numpy()
        same = sess[1:] == sess[:-1]
        self.transitions = sp.csr_matrix(
            (np.ones(int(same.sum()), dtype=np.float32), (items[:-1][same], items[1:][same])),
            shape=(n_items, n_items),
        )
        self.transitions.sum_duplicates()

    def predict(self, query: sp.csr_matrix, last: IntArray) -> ScoreMatrix:
        return np.asarray(self.transitions[last].toarray(), dtype=np.float32)


class SKNNPredictor(SessionPredictor):
    name = "sknn"

    def __init__(self, neighbours: int = 100) -> None:
        self.neighbours = neighbours

    def _fit(self, train: pd.DataFrame, n_items: int) -> None:
        self.sessions = session_matrix(train, n_items)
        size = np.asarray(self.sessions.sum(axis=1)).ravel()
        self.sessions_norm_t = sp.csr_matrix(
            sp.diags(1.0 / np.sqrt(np.maximum(size, 1.0))) @ self.sessions
        ).T.tocsr()

    def predict(self, query: sp.csr_matrix, last: IntArray) -> ScoreMatrix:
        q = query.copy()
        q.data[:] = 1.0
        q_size = np.asarray(q.sum(axis=1)).ravel()
        sims = sp.csr_matrix(sp.diags(1.0 / np.sqrt(np.maximum(q_size, 1.0))) @ (q @ self.sessions_norm_t))
        sims = top_k_per_row(sims, self.neighbours)
        return np.asarray((sims @ self.sessions).toarray(), dtype=np.float32)


class ItemKNNSessionPredictor(SessionPredictor):
    """The item-based CF model's neighbour matrix, restricted to the session catalogue."""

    name = "item_knn"

    def __init__(self, model: ItemKNNRecommender) -> None:
        self.model = model

    def _fit(self, train: pd.DataFrame, n_items: int) -> None:
        pos = index_of(self.model.item_ids, self.item_ids)
        self.known = pos >= 0
        # projection session catalogue -> model catalogue
        proj = sp.csr_matrix(
            (np.ones(int(self.known.sum()), dtype=np.float32), (np.flatnonzero(self.known), pos[self.known])),
            shape=(n_items, len(self.model.item_ids)),
        )
        similarity = self.model.similarity
        if self.model.cfg.item_self_similarity:
            similarity = similarity + sp.identity(similarity.shape[0], dtype=np.float32, format="csr")
        self.similarity = sp.csr_matrix(proj @ similarity @ proj.T)

    def predict(self, query: sp.csr_matrix, last: IntArray) -> ScoreMatrix:
        scores = np.asarray((query @ self.similarity).toarray(), dtype=np.float32)
        scores[:, ~self.known] = -np.inf
        return scores


class EmbeddingSessionPredictor(SessionPredictor):
    """Cosine similarity of LightFM item embeddings to the recency-weighted prefix."""

    name = "lightfm_emb"

    def __init__(self, model: LightFMRecommender) -> None:
        self.model = model

    def _fit(self, train: pd.DataFrame, n_items: int) -> None:
        pos = index_of(self.model.item_ids, self.item_ids)
        self.known = pos >= 0
        emb = np.zeros((n_items, self.model.item_embeddings.shape[1]), dtype=np.float32)
        emb[self.known] = unit_rows(self.model.item_embeddings[pos[self.known]])
        self.embeddings = emb

    def predict(self, query: sp.csr_matrix, last: IntArray) -> ScoreMatrix:
        q = np.asarray(query @ self.embeddings, dtype=np.float32)
        scores = unit_rows(q) @ self.embeddings.T
        scores[:, ~self.known] = -np.inf
        return np.asarray(scores, dtype=np.float32)


def evaluate_next_item(
    predictors: list[SessionPredictor],
    data: SessionData,
    cfg: SessionConfig | None = None,
    seed: int = 0,
    batch_size: int | None = None,
) -> pd.DataFrame:
    """HR@cutoff and MRR@cutoff of every predictor over all test prefixes: one row per predictor."""
    cfg = cfg or SessionConfig()
    test = data.test
    if cfg.max_test_sessions is not None and test["session"].nunique() > cfg.max_test_sessions:
        keep = np.random.default_rng(seed).choice(
            test["session"].unique(), cfg.max_test_sessions, replace=False
        )
        test = test.loc[test["session"].isin(keep)]
    prefixes = build_prefixes(test, len(data.item_ids))
    batch_size = batch_size or batch_rows(len(data.item_ids))
    rows = []
    for predictor in predictors:
        started = time.perf_counter()
        predictor.fit(data.train, data.item_ids)
        fit_s = time.perf_counter() - started
        ranks = np.empty(len(prefixes.target), dtype=np.int64)
        for lo in range(0, len(ranks), batch_size):
            hi = lo + batch_size
            scores = predictor.predict(prefixes.query[lo:hi], prefixes.last[lo:hi])
            ranks[lo:hi] = batch_target_ranks(scores, prefixes.target[lo:hi])
        hit = ranks <= cfg.cutoff
        rows.append(
            {
                "model": predictor.name,
                f"hr@{cfg.cutoff}": float(hit.mean()) if len(hit) else float("nan"),
                f"mrr@{cfg.cutoff}": float(np.where(hit, 1.0 / ranks, 0.0).mean())
                if len(hit)
                else float("nan"),
                "predictions": len(ranks),
                "seconds": time.perf_counter() - started,
                "fit_seconds": fit_s,
            }
        )
        logger.info(
            "next item: %s HR@%d %.4f MRR@%d %.4f over %d predictions",
            predictor.name,
            cfg.cutoff,
            rows[-1][f"hr@{cfg.cutoff}"],
            cfg.cutoff,
            rows[-1][f"mrr@{cfg.cutoff}"],
            len(ranks),
        )
    return pd.DataFrame(rows)
