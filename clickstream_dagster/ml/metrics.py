"""Ranking metrics, per visitor and in vectorized batches (which must agree; the tests check both).

Definitions (k is the cut-off; `relevant` the visitor's relevant items; hits are relevant items in the
top k):
- precision@k = hits / k (k fixed, even if fewer than k items were recommended);
- recall@k = hits / |relevant|;
- F1@k = 2 P R / (P + R) per visitor (0 without hits), then averaged like the others;
- NDCG@k = sum over hit ranks r of 1 / log2(r + 1), divided by the same sum over ranks 1..min(|relevant|, k);
- AUC is the **full** AUC per visitor: the probability that a relevant item scores above a non-relevant
  one, over every catalogue item the visitor may be recommended (excluded items are neither); ties count
  one half. No sampling;
- catalogue coverage = distinct items in all top-k lists / catalogue size;
- next-item HR@n and MRR@n: the target's rank is 1 + the number of other items scoring at least as high
  (pessimistic on ties, so unscored items never count as hits); HR is rank <= n, MRR is 1/rank if
  rank <= n else 0.

All per-visitor metrics are averaged over the visitors scored (macro averages).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

FloatArray = npt.NDArray[np.float64]


def _discounts(n: int) -> FloatArray:
    return 1.0 / np.log2(np.arange(2, n + 2, dtype=np.float64))


# --- one visitor ----------------------------------------------------------------------------------------


def precision_at_k(recommended: Sequence[int], relevant: Collection[int], k: int) -> float:
    return sum(1 for i in recommended[:k] if i in relevant) / k


def recall_at_k(recommended: Sequence[int], relevant: Collection[int], k: int) -> float:
    if not relevant:
        return 0.0
    return sum(1 for i in recommended[:k] if i in relevant) / len(relevant)


def f1_at_k(recommended: Sequence[int], relevant: Collection[int], k: int) -> float:
    p, r = precision_at_k(recommended, relevant, k), recall_at_k(recommended, relevant, k)
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def ndcg_at_k(recommended: Sequence[int], relevant: Collection[int], k: int) -> float:
    if not relevant:
        return 0.0
    disc = _discounts(k)
    dcg = sum(disc[r] for r, i in enumerate(recommended[:k]) if i in relevant)
    return float(dcg / disc[: min(len(relevant), k)].sum())


def auc_score(scores: npt.ArrayLike, relevant: Collection[int], excluded: Collection[int] = ()) -> float:
    """Full AUC of one visitor: `scores` over the catalogue, `relevant` and `excluded` column indices."""
    s = np.asarray(scores, dtype=np.float64)
    candidates = np.setdiff1d(np.arange(len(s)), np.fromiter(excluded, dtype=np.int64, count=len(excluded)))
    pos = np.isin(candidates, np.fromiter(relevant, dtype=np.int64, count=len(relevant)))
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata  # scipy.stats costs ~1.5 s to import; only evaluation needs it

    ranks = rankdata(s[candidates])
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def catalogue_coverage(recommended: npt.ArrayLike, catalogue_size: int) -> float:
    """Distinct recommended items (any shape of item ids) over the catalogue size."""
    return float(len(np.unique(np.asarray(recommended))) / catalogue_size) if catalogue_size else 0.0


def target_rank(scores: npt.ArrayLike, target: int) -> int:
    """1 + the number of other items scoring at least as high as `target` (pessimistic on ties)."""
    s = np.asarray(scores)
    return int((s >= s[target]).sum())


def hit_and_reciprocal_rank(scores: npt.ArrayLike, target: int, cutoff: int = 20) -> tuple[float, float]:
    rank = target_rank(scores, target)
    return (1.0, 1.0 / rank) if rank <= cutoff else (0.0, 0.0)


# --- batches --------------------------------------------------------------------------------------------


def batch_ranking_metrics(
    top: npt.NDArray[np.int64], relevant: sp.csr_matrix, k: int
) -> dict[str, FloatArray]:
    """Per-visitor precision, recall, F1 and NDCG at k from top-k column indices (rows = visitors, best
    first; -1 pads short lists) and a visitors x items 0/1 matrix of relevant items."""
    top = top[:, :k]
    n_rel = np.diff(relevant.indptr).astype(np.float64)
    rows = np.repeat(np.arange(top.shape[0]), top.shape[1])
    cols = top.ravel()
    hit = np.zeros(len(cols), dtype=bool)
    valid = cols >= 0
    hit[valid] = np.asarray(relevant[rows[valid], cols[valid]]).ravel() > 0
    hits = hit.reshape(top.shape)
    n_hits = hits.sum(axis=1).astype(np.float64)
    precision = n_hits / k
    recall = np.divide(n_hits, n_rel, out=np.zeros_like(n_hits), where=n_rel > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    disc = _discounts(k)
    dcg = (hits * disc[: top.shape[1]]).sum(axis=1)
    ideal_disc = np.r_[0.0, np.cumsum(disc)]
    idcg = ideal_disc[np.minimum(n_rel, k).astype(np.int64)]
    ndcg = np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "ndcg": ndcg}


def batch_auc(
    scores: npt.NDArray[np.floating], relevant: sp.csr_matrix, max_cells: int = 8_000_000
) -> FloatArray:
    """Full AUC per row. Excluded items carry -inf in `scores` (below everything, and taken out of the
    pairs); relevant items must be finite.

    Each positive is compared with its whole row (O(positives x items), cheaper than sorting every row
    when visitors have a few relevant items): with `below` the items scoring lower and `ties` the other
    items scoring the same, sum(below + ties / 2) over a row's positives counts every excluded item once
    per positive and every pair of positives exactly once, which the formula takes back out."""
    n_items = scores.shape[1]
    n_excl = (~np.isfinite(scores)).sum(axis=1).astype(np.float64)
    rel = relevant.tocoo()
    credit = np.zeros(rel.nnz)
    step = max(1, max_cells // max(n_items, 1))
    for lo in range(0, rel.nnz, step):
        rows = rel.row[lo : lo + step]
        block = scores[rows]
        mine = scores[rows, rel.col[lo : lo + step]][:, None]
        credit[lo : lo + step] = (block < mine).sum(axis=1) + 0.5 * ((block == mine).sum(axis=1) - 1)
    per_row = np.zeros(scores.shape[0])
    np.add.at(per_row, rel.row, credit)
    n_pos = np.diff(relevant.indptr).astype(np.float64)
    n_neg = n_items - n_excl - n_pos
    u = per_row - n_pos * n_excl - n_pos * (n_pos - 1) / 2
    out = np.full(scores.shape[0], np.nan)
    ok = (n_pos > 0) & (n_neg > 0)
    out[ok] = u[ok] / (n_pos[ok] * n_neg[ok])
    return out


def batch_target_ranks(
    scores: npt.NDArray[np.floating], targets: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """`target_rank` for every row: 1 + other items scoring at least as high as the row's target."""
    t = scores[np.arange(len(targets)), targets][:, None]
    return (scores >= t).sum(axis=1).astype(np.int64)
