"""Recommenders with one interface: `fit(train, item_features=None)`, `score(user_ids)`,
`recommend(user_ids, k, exclude=...)`.

- `PopularityRecommender`: distinct visitors per item in the training window.
- `ItemKNNRecommender`: item-based CF, cosine between item columns of the weighted visitor x item matrix,
  keeping the top-k neighbours per item; a visitor's score is `x_u @ (S + I)` (an item is its own
  neighbour unless `item_self_similarity` is off).
- `UserKNNRecommender`: user-based CF, cosine between visitor rows, top-k neighbours per scored visitor
  computed on demand in batches (never a dense users x users matrix); score is `sims @ X`.
- `SessionKNNRecommender`: session-based kNN (V-SKNN): a visitor's latest session, recency-weighted, against
  the training sessions; the neighbours' items score by their similarity.
- `LightFMRecommender`: LightFM (WARP by default), hybrid when given item features (identity + category
  path + availability); scores come from the learnt representations (`u @ I.T + item bias`).

Every model ranks its whole training catalogue and never recommends an item the visitor bought in the
training data (`recommend`, and the `masked_scores` the evaluation uses). Visitors unknown to a model get
the popularity ranking.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp

from clickstream_dagster.ml.config import KNNConfig, LightFMParams, SessionConfig
from clickstream_dagster.ml.features import ItemFeatures
from clickstream_dagster.ml.prep import IntArray, InteractionMatrix, index_of

logger = logging.getLogger(__name__)

ScoreMatrix = npt.NDArray[np.float32]
# Dense score blocks hold about this many cells (float32: 32 MB), whatever the catalogue size.
BATCH_CELLS = 8_000_000


def batch_rows(n_cols: int, cells: int = BATCH_CELLS) -> int:
    """Rows per dense block of `n_cols` columns that keeps the block near `cells` cells."""
    return max(1, min(4096, cells // max(n_cols, 1)))


class Recommender(ABC):
    """Common behaviour: id mappings, purchased-item exclusion, batching, popularity fallback."""

    name: str = "recommender"

    def __init__(self) -> None:
        self.user_ids: IntArray = np.zeros(0, dtype=np.int64)
        self.item_ids: IntArray = np.zeros(0, dtype=np.int64)
        self.purchased: sp.csr_matrix = sp.csr_matrix((0, 0), dtype=np.float32)
        self.popularity: ScoreMatrix = np.zeros(0, dtype=np.float32)
        self.fit_seconds: float = 0.0

    def fit(
        self,
        train: InteractionMatrix,
        item_features: ItemFeatures | None = None,
        events: pd.DataFrame | None = None,
    ) -> Self:
        """Fit on `train`; `events` (the cleaned events behind it, with timestamps) are needed only by the
        models that use their order (session kNN)."""
        started = time.perf_counter()
        self.user_ids = train.user_ids
        self.item_ids = train.item_ids
        self.purchased = train.purchased.tocsr()
        self.popularity = np.asarray((train.weights > 0).sum(axis=0), dtype=np.float32).ravel()
        self._fit(train, item_features, events)
        self.fit_seconds = time.perf_counter() - started
        logger.info(
            "%s: fitted on %d visitors x %d items (%d interactions) in %.2f s",
            self.name,
            train.shape[0],
            train.shape[1],
            train.weights.nnz,
            self.fit_seconds,
        )
        return self

    @abstractmethod
    def _fit(
        self, train: InteractionMatrix, item_features: ItemFeatures | None, events: pd.DataFrame | None
    ) -> None: ...

    @abstractmethod
    def _score_users(self, user_idx: IntArray) -> ScoreMatrix:
        """Scores of known users (row indices) over the whole catalogue."""

    # --- scoring ---------------------------------------------------------------------------------------

    def score(self, user_ids: npt.ArrayLike) -> ScoreMatrix:
        """Scores of `user_ids` (external ids) over `self.item_ids`; higher is better. Unknown visitors
        get the popularity scores. No exclusion is applied here."""
        idx = index_of(self.user_ids, user_ids)
        known = idx >= 0
        if known.all():
            return self._score_users(idx)
        out = np.empty((len(idx), len(self.item_ids)), dtype=np.float32)
        if known.any():
            out[known] = self._score_users(idx[known])
        if (~known).any():
            out[~known] = self.popularity
        return out

    def masked_scores(self, user_idx: IntArray) -> ScoreMatrix:
        """Scores of known users (row indices) with their purchased items set to -inf."""
        scores = self._score_users(user_idx)
        bought = self.purchased[user_idx].tocoo()
        scores[bought.row, bought.col] = -np.inf
        return scores

    def recommend(
        self,
        user_ids: npt.ArrayLike,
        k: int = 10,
        exclude: Mapping[int, Collection[int]] | None = None,
        exclude_items: Collection[int] | None = None,
        batch_size: int | None = None,
    ) -> pd.DataFrame:
        """Top-`k` items per visitor: columns visitorid, rank (1-based), itemid, score.

        Never returns an item the visitor bought in the training data. `exclude` adds per-visitor items
        (e.g. purchases after training), `exclude_items` removes items for everyone (e.g. unavailable).
        A visitor can get fewer than `k` rows if the catalogue runs out.
        """
        users = np.asarray(user_ids, dtype=np.int64)
        batch_size = batch_size or batch_rows(len(self.item_ids))
        global_cols = self._item_positions(exclude_items or ())
        frames = [
            self._recommend_batch(users[lo : lo + batch_size], k, exclude, global_cols)
            for lo in range(0, len(users), batch_size)
        ]
        if not frames:
            return pd.DataFrame(
                {
                    "visitorid": np.zeros(0, np.int64),
                    "rank": np.zeros(0, np.int64),
                    "itemid": np.zeros(0, np.int64),
                    "score": np.zeros(0, np.float32),
                }
            )
        return pd.concat(frames, ignore_index=True)

    def iter_recommendations(
        self,
        user_ids: npt.ArrayLike,
        k: int = 10,
        exclude: Mapping[int, Collection[int]] | None = None,
        exclude_items: Collection[int] | None = None,
        batch_size: int | None = None,
    ) -> Iterator[pd.DataFrame]:
        """`recommend` batch by batch, for writing large outputs without holding them all."""
        users = np.asarray(user_ids, dtype=np.int64)
        batch_size = batch_size or batch_rows(len(self.item_ids))
        for lo in range(0, len(users), batch_size):
            yield self.recommend(users[lo : lo + batch_size], k, exclude, exclude_items, batch_size)

    def _item_positions(self, item_ids: Collection[int]) -> IntArray:
        pos = index_of(self.item_ids, np.fromiter(item_ids, dtype=np.int64, count=len(item_ids)))
        return pos[pos >= 0]

    def _recommend_batch(
        self,
        users: IntArray,
        k: int,
        exclude: Mapping[int, Collection[int]] | None,
        global_cols: IntArray,
    ) -> pd.DataFrame:
        scores = self.score(users)
        idx = index_of(self.user_ids, users)
        known = np.flatnonzero(idx >= 0)
        bought = self.purchased[idx[known]].tocoo()
        scores[known[bought.row], bought.col] = -np.inf
        scores[:, global_cols] = -np.inf
        if exclude:
            for row, visitor in enumerate(users.tolist()):
                extra = exclude.get(visitor)
                if extra:
                    scores[row, self._item_positions(extra)] = -np.inf
        top, top_scores = top_k(scores, k)
        rows = np.repeat(np.arange(len(users)), top.shape[1])
        ranks = np.tile(np.arange(1, top.shape[1] + 1), len(users))
        flat_scores = top_scores.ravel()
        ok = np.isfinite(flat_scores)
        return pd.DataFrame(
            {
                "visitorid": users[rows[ok]],
                "rank": ranks[ok],
                "itemid": self.item_ids[top.ravel()[ok]],
                "score": flat_scores[ok],
            }
        )


TOP_K_BLOCK = 128  # columns per block of `top_k`'s block maxima


def top_k(scores: ScoreMatrix, k: int) -> tuple[IntArray, ScoreMatrix]:
    """Column indices and values of each row's `k` largest scores, best first (ties: lower index; which of
    several scores equal to the k-th is kept is not specified).

    Exact, and fast on wide rows: the maximum of every block of `TOP_K_BLOCK` columns is taken first. If a
    row's k-th largest block maximum m is reached by exactly k blocks, those blocks hold every score >= the
    row's k-th largest score (each of the k blocks holds one score >= m, so the k-th largest score is >= m,
    and any score >= it lies in a block whose maximum is >= m), so the full selection runs on their k x
    TOP_K_BLOCK columns only. Rows with ties at m (e.g. many equal or -inf scores) take the full selection."""
    n_rows, n_cols = scores.shape
    k = min(k, n_cols)
    if k <= 0:
        return np.zeros((n_rows, 0), dtype=np.int64), np.zeros((n_rows, 0), np.float32)
    blocks = -(-n_cols // TOP_K_BLOCK)
    if n_rows == 0 or blocks < 4 * k:
        return _top_k_full(scores, k, None)
    block_max = np.maximum.reduceat(scores, np.arange(0, n_cols, TOP_K_BLOCK), axis=1)
    kth = np.partition(block_max, blocks - k, axis=1)[:, blocks - k]
    fast = (block_max >= kth[:, None]).sum(axis=1) == k
    top = np.empty((n_rows, k), dtype=np.int64)
    vals = np.empty((n_rows, k), dtype=scores.dtype)
    rows = np.flatnonzero(fast)
    if len(rows):
        chosen = np.argpartition(-block_max[rows], k - 1, axis=1)[:, :k]
        cols = (chosen[:, :, None] * TOP_K_BLOCK + np.arange(TOP_K_BLOCK)).reshape(len(rows), -1)
        inside = cols < n_cols
        cols = np.where(inside, cols, 0)
        candidates = np.where(inside, scores[rows[:, None], cols], -np.inf).astype(scores.dtype, copy=False)
        top[rows], vals[rows] = _top_k_full(candidates, k, cols)
    slow = np.flatnonzero(~fast)
    if len(slow):
        top[slow], vals[slow] = _top_k_full(scores[slow], k, None)
    return top, vals


def _top_k_full(scores: ScoreMatrix, k: int, columns: IntArray | None) -> tuple[IntArray, ScoreMatrix]:
    """`top_k` by a partition of every column; `columns` maps the columns of `scores` to the indices
    reported (and tie-broken on), when `scores` holds a gathered subset."""
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(scores, part, axis=1)
    if columns is not None:
        part = np.take_along_axis(columns, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    top = np.take_along_axis(part, order, axis=1).astype(np.int64)
    return top, np.take_along_axis(vals, order, axis=1)


def top_k_per_row(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep each row's `k` largest stored values (fully vectorized)."""
    m = sp.csr_matrix(m)
    m.sum_duplicates()
    counts = np.diff(m.indptr)
    if len(counts) == 0 or counts.max() <= k:
        return m
    row = np.repeat(np.arange(m.shape[0]), counts)
    order = np.lexsort((-m.data, row))  # rows stay grouped; each row's values descending
    rank = np.arange(len(order)) - m.indptr[row]
    keep = order[rank < k]
    return sp.csr_matrix((m.data[keep], (row[keep], m.indices[keep])), shape=m.shape)


def unit_rows(m: npt.NDArray[np.floating]) -> ScoreMatrix:
    """Dense rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return np.asarray(m / np.maximum(norms, 1e-12), dtype=np.float32)


def _l2_normalize_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    return sp.csr_matrix(sp.diags(1.0 / np.maximum(norms, 1e-12)) @ m, dtype=np.float32)


class PopularityRecommender(Recommender):
    """Most popular items in the training window (distinct visitors), the same list for everyone."""

    name = "popularity"

    def _fit(
        self, train: InteractionMatrix, item_features: ItemFeatures | None, events: pd.DataFrame | None
    ) -> None:
        pass

    def _score_users(self, user_idx: IntArray) -> ScoreMatrix:
        return np.tile(self.popularity, (len(user_idx), 1))


class ItemKNNRecommender(Recommender):
    """Item-based CF: top-`neighbours` cosine neighbours per item (`similarity`, never the item itself);
    a visitor scores `x_u @ (S + I)`, or `x_u @ S` without `item_self_similarity`."""

    name = "item_knn"

    def __init__(self, cfg: KNNConfig | None = None, chunk_items: int = 2048) -> None:
        super().__init__()
        self.cfg = cfg or KNNConfig()
        self.chunk_items = chunk_items
        self.similarity: sp.csr_matrix = sp.csr_matrix((0, 0), dtype=np.float32)
        self._x: sp.csr_matrix = sp.csr_matrix((0, 0), dtype=np.float32)

    def _fit(
        self, train: InteractionMatrix, item_features: ItemFeatures | None, events: pd.DataFrame | None
    ) -> None:
        self._x = train.weights.astype(np.float32).tocsr()
        self.similarity = item_cosine_topk(
            self._x, self.cfg.item_neighbours, self.cfg.shrink, chunk_items=self.chunk_items
        )

    def _score_users(self, user_idx: IntArray) -> ScoreMatrix:
        x = self._x[user_idx]
        scores = x @ self.similarity
        if self.cfg.item_self_similarity:
            scores = scores + x
        return np.asarray(scores.toarray(), dtype=np.float32)


def item_cosine_topk(
    x: sp.csr_matrix, neighbours: int, shrink: float = 0.0, chunk_items: int = 2048
) -> sp.csr_matrix:
    """Items x items: row i holds item i's `neighbours` most cosine-similar items (never i itself).

    Computed in chunks of rows of X^T X, so memory stays bounded by the chunk's sparse product."""
    xt = _l2_normalize_rows(x.T.tocsr())  # items x users, unit rows
    x_norm = xt.T.tocsr()
    binary = None
    if shrink > 0:
        binary_t = x.T.tocsr().astype(bool).astype(np.float32)
        binary = binary_t.T.tocsr()
    parts: list[sp.csr_matrix] = []
    n_items = xt.shape[0]
    for lo in range(0, n_items, chunk_items):
        hi = min(lo + chunk_items, n_items)
        sims = sp.csr_matrix(xt[lo:hi] @ x_norm)
        if binary is not None:
            co = sp.csr_matrix(binary_t[lo:hi] @ binary)
            co.data = co.data / (co.data + shrink)
            sims = sp.csr_matrix(sims.multiply(co))
        sims = sims.tolil()
        sims.setdiag(0.0, k=lo)
        sims = sims.tocsr()
        sims.eliminate_zeros()
        parts.append(top_k_per_row(sims, neighbours))
    return sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, 0), dtype=np.float32)


class UserKNNRecommender(Recommender):
    """User-based CF: each scored visitor's top-`neighbours` cosine neighbours, found in batches."""

    name = "user_knn"

    def __init__(self, cfg: KNNConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or KNNConfig()
        self._x: sp.csr_matrix = sp.csr_matrix((0, 0), dtype=np.float32)
        self._x_norm: sp.csr_matrix = sp.csr_matrix((0, 0), dtype=np.float32)
        self._x_norm_t: sp.csr_matrix = sp.csr_matrix((0, 0), dtype=np.float32)

    def _fit(
        self, train: InteractionMatrix, item_features: ItemFeatures | None, events: pd.DataFrame | None
    ) -> None:
        self._x = train.weights.astype(np.float32).tocsr()
        self._x_norm = _l2_normalize_rows(self._x)
        self._x_norm_t = self._x_norm.T.tocsr()

    def _score_users(self, user_idx: IntArray) -> ScoreMatrix:
        out = np.empty((len(user_idx), self._x.shape[1]), dtype=np.float32)
        step = min(256, batch_rows(self._x.shape[1]))
        for lo in range(0, len(user_idx), step):
            batch = user_idx[lo : lo + step]
            sims = sp.csr_matrix(self._x_norm[batch] @ self._x_norm_t).tocoo()
            keep = sims.col != batch[sims.row]  # a visitor is not their own neighbour
            sims = sp.csr_matrix((sims.data[keep], (sims.row[keep], sims.col[keep])), shape=sims.shape)
            sims = top_k_per_row(sims, self.cfg.user_neighbours)
            out[lo : lo + len(batch)] = (sims @ self._x).toarray()
        return out


class LightFMRecommender(Recommender):
    """LightFM with optional item features; `epoch_seconds` records the time of every epoch."""

    name = "lightfm"

    def __init__(self, params: LightFMParams | None = None) -> None:
        super().__init__()
        self.params = params or LightFMParams()
        self.model: Any = None  # lightfm.LightFM, untyped
        self.epochs_done = 0
        self.epoch_seconds: list[float] = []
        self.user_embeddings: ScoreMatrix = np.zeros((0, 0), dtype=np.float32)
        self.item_embeddings: ScoreMatrix = np.zeros((0, 0), dtype=np.float32)
        self.item_biases: ScoreMatrix = np.zeros(0, dtype=np.float32)
        self._interactions: sp.coo_matrix | None = None
        self._sample_weight: sp.coo_matrix | None = None
        self._features: sp.csr_matrix | None = None

    def _fit(
        self, train: InteractionMatrix, item_features: ItemFeatures | None, events: pd.DataFrame | None
    ) -> None:
        from lightfm import LightFM

        p = self.params
        self.model = LightFM(
            no_components=p.no_components,
            learning_rate=p.learning_rate,
            loss=p.loss,
            item_alpha=p.item_alpha,
            user_alpha=p.user_alpha,
            max_sampled=p.max_sampled,
            random_state=np.random.RandomState(p.random_state),
        )
        weights = train.weights.tocoo()
        self._interactions = sp.coo_matrix(
            (np.ones(weights.nnz, dtype=np.float32), (weights.row, weights.col)), shape=weights.shape
        )
        transforms: dict[str, Callable[[npt.NDArray[Any]], npt.NDArray[Any]]] = {
            "log1p": np.log1p,
            "raw": lambda w: w,
            "none": np.ones_like,
        }
        if p.sample_weight not in transforms:
            raise ValueError(f"sample_weight must be one of {sorted(transforms)}, got {p.sample_weight!r}")
        if p.loss == "warp-kos" and p.sample_weight != "none":
            raise ValueError(
                'LightFM has no sample weights for the warp-kos loss: set sample_weight to "none"'
            )
        self._sample_weight = (
            None  # every interaction weighs 1: LightFM's own default, the only one k-OS takes
            if p.sample_weight == "none"
            else sp.coo_matrix(
                (transforms[p.sample_weight](weights.data).astype(np.float32), (weights.row, weights.col)),
                shape=weights.shape,
            )
        )
        self._features = None if item_features is None else item_features.rows_for(train.item_ids)
        self.epochs_done = 0
        self.epoch_seconds = []
        self.train_more(p.epochs)

    def train_more(self, epochs: int) -> None:
        """Continue training for `epochs` more passes (warm start), then refresh the representations."""
        if self.model is None or self._interactions is None:
            raise RuntimeError(
                "LightFMRecommender has no training data: call fit first (a model loaded from a bundle or "
                "compacted for serving cannot continue training)"
            )
        for _ in range(epochs):
            started = time.perf_counter()
            self.model.fit_partial(
                self._interactions,
                item_features=self._features,
                sample_weight=self._sample_weight,
                epochs=1,
                num_threads=self.params.num_threads,
            )
            self.epoch_seconds.append(time.perf_counter() - started)
            self.epochs_done += 1
            logger.debug("lightfm: epoch %d in %.2f s", self.epochs_done, self.epoch_seconds[-1])
        if self.epochs_done:
            self._refresh()
        if epochs:
            logger.info(
                "lightfm: %d epochs done (%.2f s per epoch)",
                self.epochs_done,
                float(np.mean(self.epoch_seconds)),
            )

    def _refresh(self) -> None:
        model = self.model
        item_bias, item_emb = model.get_item_representations(self._features)
        _, user_emb = model.get_user_representations()
        self.item_biases = item_bias.astype(np.float32)
        self.item_embeddings = item_emb.astype(np.float32)
        self.user_embeddings = user_emb.astype(np.float32)

    def _score_users(self, user_idx: IntArray) -> ScoreMatrix:
        scores = np.asarray(self.user_embeddings[user_idx] @ self.item_embeddings.T, np.float32)
        scores += self.item_biases  # in place: one pass less over the block
        return scores

    def compact(self) -> Self:
        """Keep only what scoring needs (representations, ids, purchases): drops the LightFM object with
        its per-feature optimiser state and the training matrices, which shrinks the artefact several
        times. The model can then no longer `train_more`."""
        self.model = None
        self._interactions = None
        self._sample_weight = None
        self._features = None
        return self

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_interactions"] = state["_sample_weight"] = state["_features"] = None
        return state


class SessionKNNRecommender(Recommender):
    """Session-based kNN for visitors (V-SKNN, after Ludewig et al.).

    A visitor's query is their latest session in the training events (a gap of more than `gap_minutes`
    starts a new one), its items weighted by recency: the newest 1, the one before (L-1)/L, ... (L items).
    Its neighbours are the `sknn_neighbours` training sessions most similar to it (cosine of the weighted
    query and the sessions' item sets, the query session itself left out); an item scores the summed
    similarity of the neighbours that hold it. Popularity breaks ties, so every list is full. It needs the
    events in time order at fit (`fit(..., events=...)`)."""

    name = "session_knn"

    def __init__(self, cfg: SessionConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or SessionConfig()
        self._query: sp.csr_matrix = sp.csr_matrix((0, 0), dtype=np.float32)
        self._query_norm: ScoreMatrix = np.zeros(0, dtype=np.float32)
        self._sessions: sp.csr_matrix = sp.csr_matrix((0, 0), dtype=np.float32)
        self._sessions_norm_t: sp.csr_matrix = sp.csr_matrix((0, 0), dtype=np.float32)
        self._last_session: IntArray = np.zeros(0, dtype=np.int64)

    def _fit(
        self, train: InteractionMatrix, item_features: ItemFeatures | None, events: pd.DataFrame | None
    ) -> None:
        if events is None:
            raise ValueError("session_knn needs the training events (their time order) to fit")
        rows = index_of(self.user_ids, events["visitorid"].to_numpy(dtype=np.int64))
        cols = index_of(self.item_ids, events["itemid"].to_numpy(dtype=np.int64))
        ts = events["timestamp"].to_numpy(dtype=np.int64)
        ok = (rows >= 0) & (cols >= 0)
        rows, cols, ts = rows[ok], cols[ok], ts[ok]
        order = np.lexsort((ts, rows))
        rows, cols, ts = rows[order], cols[order], ts[order]
        gap = int(self.cfg.gap_minutes * 60_000)
        starts = np.ones(len(rows), dtype=bool)
        starts[1:] = (rows[1:] != rows[:-1]) | (ts[1:] - ts[:-1] > gap)
        session = np.cumsum(starts) - 1
        n_sessions = int(session[-1]) + 1 if len(session) else 0
        n_users, n_items = len(self.user_ids), len(self.item_ids)
        sessions = sp.csr_matrix(
            (np.ones(len(cols), dtype=np.float32), (session, cols)), shape=(n_sessions, n_items)
        )
        sessions.data[:] = 1.0  # an item viewed twice in a session counts once
        self._sessions = sessions
        size = np.diff(sessions.indptr).astype(np.float32)
        self._sessions_norm_t = sp.csr_matrix(
            sp.diags(1.0 / np.sqrt(np.maximum(size, 1.0))) @ sessions
        ).T.tocsr()
        # Each visitor's latest session, its events numbered from 1 (oldest) to L (newest): weight k / L.
        last = np.full(n_users, -1, dtype=np.int64)
        last[rows] = session  # rows are sorted by time within each visitor: the last write wins
        self._last_session = last
        mine = session == last[rows]
        first_of = np.searchsorted(session, session[mine], side="left")
        count = np.searchsorted(session, session[mine], side="right") - first_of
        position = np.flatnonzero(mine) - first_of + 1
        weight = (position / count).astype(np.float32)
        # An item seen more than once in the query keeps its newest (largest) weight, not a sum.
        key = rows[mine] * n_items + cols[mine]
        order = np.lexsort((weight, key))
        key, weight = key[order], weight[order]
        newest = np.r_[key[1:] != key[:-1], True] if len(key) else np.zeros(0, dtype=bool)
        key, weight = key[newest], weight[newest]
        query = sp.csr_matrix((weight, (key // n_items, key % n_items)), shape=(n_users, n_items))
        self._query = query
        self._query_norm = np.sqrt(np.asarray(query.multiply(query).sum(axis=1)).ravel()).astype(np.float32)

    def _score_users(self, user_idx: IntArray) -> ScoreMatrix:
        out = np.empty((len(user_idx), len(self.item_ids)), dtype=np.float32)
        step = min(512, batch_rows(len(self.item_ids)))
        tie_break = self.popularity / max(float(self.popularity.max(initial=0.0)), 1.0) * 1e-6
        for lo in range(0, len(user_idx), step):
            batch = user_idx[lo : lo + step]
            q = self._query[batch]
            sims = sp.csr_matrix(
                sp.diags(1.0 / np.maximum(self._query_norm[batch], 1e-12)) @ (q @ self._sessions_norm_t)
            ).tocoo()
            keep = sims.col != self._last_session[batch][sims.row]  # not the query session itself
            sims = sp.csr_matrix((sims.data[keep], (sims.row[keep], sims.col[keep])), shape=sims.shape)
            sims = top_k_per_row(sims, self.cfg.sknn_neighbours)
            out[lo : lo + len(batch)] = (sims @ self._sessions).toarray() + tie_break
        return out
