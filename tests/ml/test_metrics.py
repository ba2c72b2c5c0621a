"""Metrics on tiny cases whose expected values are worked out by hand in each test."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from clickstream_dagster.ml.metrics import (
    auc_score,
    batch_auc,
    batch_ranking_metrics,
    batch_target_ranks,
    catalogue_coverage,
    f1_at_k,
    hit_and_reciprocal_rank,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    target_rank,
)

RECOMMENDED = [1, 2, 3, 4, 5]
RELEVANT = {2, 5, 9}


def test_precision_recall_f1_at_5() -> None:
    # Hits at ranks 2 and 5: 2 of the 5 recommended, 2 of the 3 relevant.
    assert precision_at_k(RECOMMENDED, RELEVANT, 5) == pytest.approx(2 / 5)
    assert recall_at_k(RECOMMENDED, RELEVANT, 5) == pytest.approx(2 / 3)
    # 2PR/(P+R) = 2 * (2/5)(2/3) / (2/5 + 2/3) = (8/15) / (16/15) = 1/2
    assert f1_at_k(RECOMMENDED, RELEVANT, 5) == pytest.approx(0.5)


def test_cutoff_counts_only_the_top_k() -> None:
    # Top 2 = [1, 2]: one hit; precision divides by k even if fewer items are relevant.
    assert precision_at_k(RECOMMENDED, RELEVANT, 2) == pytest.approx(1 / 2)
    assert recall_at_k(RECOMMENDED, RELEVANT, 2) == pytest.approx(1 / 3)
    assert precision_at_k([7], {7}, 10) == pytest.approx(1 / 10)


def test_ndcg_by_hand() -> None:
    # DCG@5 = 1/log2(2+1) + 1/log2(5+1); the ideal puts the 3 relevant items at ranks 1..3.
    dcg = 1 / math.log2(3) + 1 / math.log2(6)
    idcg = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(RECOMMENDED, RELEVANT, 5) == pytest.approx(dcg / idcg)
    assert dcg / idcg == pytest.approx(0.47762, abs=1e-5)
    # At k=2 the ideal has only 2 slots: (1/log2 3) / (1 + 1/log2 3).
    assert ndcg_at_k(RECOMMENDED, RELEVANT, 2) == pytest.approx(0.38685, abs=1e-5)
    assert ndcg_at_k([9, 5, 2], RELEVANT, 3) == pytest.approx(1.0)
    assert ndcg_at_k([1, 3], RELEVANT, 2) == 0.0


def test_auc_by_hand_with_exclusion_and_ties() -> None:
    scores = [0.9, 0.1, 0.5, 0.7, 0.3]
    # Relevant {1, 2} score 0.1 and 0.5; item 3 (0.7) is excluded, so the negatives are 0 (0.9) and 4 (0.3).
    # Pairs won: 0.5 > 0.3 only -> 1 of 4.
    assert auc_score(scores, {1, 2}, excluded={3}) == pytest.approx(1 / 4)
    # Without the exclusion 0.7 is one more negative that both positives lose to: 1 of 6.
    assert auc_score(scores, {1, 2}) == pytest.approx(1 / 6)
    # A tie counts one half: positive 1.0 vs negatives 1.0 (tie) and 0.0 (win) -> 1.5 / 2.
    assert auc_score([1.0, 1.0, 0.0], {0}) == pytest.approx(0.75)
    assert math.isnan(auc_score([1.0, 2.0], set()))


def test_batch_metrics_match_the_per_visitor_ones() -> None:
    # Two visitors over 10 items. Visitor 0: top [1, 2, 3, 4, 5], relevant {2, 5, 9}.
    # Visitor 1: top [0, 6, -1 (short list), ...], relevant {6}.
    top = np.array([[1, 2, 3, 4, 5], [0, 6, -1, -1, -1]])
    relevant = sp.csr_matrix(
        (np.ones(4), ([0, 0, 0, 1], [2, 5, 9, 6])),
        shape=(2, 10),
    )
    got = batch_ranking_metrics(top, relevant, 5)
    assert got["precision"] == pytest.approx([2 / 5, 1 / 5])
    assert got["recall"] == pytest.approx([2 / 3, 1.0])
    assert got["f1"] == pytest.approx([0.5, 2 * 0.2 * 1.0 / 1.2])
    assert got["ndcg"] == pytest.approx([ndcg_at_k(RECOMMENDED, RELEVANT, 5), 1 / math.log2(3)])

    scores = np.array([[0.9, 0.1, 0.5, -np.inf, 0.3], [1.0, 1.0, 0.0, 0.2, 0.2]])
    rel = sp.csr_matrix((np.ones(3), ([0, 0, 1], [1, 2, 0])), shape=(2, 5))
    # Row 0 is the excluded case above (1/4). Row 1: positive 1.0 vs 1.0 (half), 0.0, 0.2, 0.2 -> 3.5/4.
    assert batch_auc(scores, rel) == pytest.approx([1 / 4, 3.5 / 4])


def test_coverage() -> None:
    assert catalogue_coverage(np.array([[1, 2], [2, 3]]), 10) == pytest.approx(0.3)


def test_next_item_rank_hit_and_mrr() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.5])
    # Target 2 scores 0.5; items 1 (0.9) and 3 (0.5, a tie) count against it: rank 3 (pessimistic).
    assert target_rank(scores, 2) == 3
    assert hit_and_reciprocal_rank(scores, 2, cutoff=3) == (1.0, pytest.approx(1 / 3))
    assert hit_and_reciprocal_rank(scores, 2, cutoff=2) == (0.0, 0.0)
    assert hit_and_reciprocal_rank(scores, 1, cutoff=20) == (1.0, 1.0)
    ranks = batch_target_ranks(np.vstack([scores, scores]), np.array([2, 1]))
    assert ranks.tolist() == [3, 1]


def test_batch_auc_agrees_with_rank_based_auc_on_random_ties() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 50, (30, 200)).astype(np.float32)  # integer scores: many ties
    excluded = rng.random(scores.shape) < 0.1
    scores[excluded] = -np.inf
    relevant = (rng.random(scores.shape) < 0.05) & ~excluded
    got = batch_auc(scores, sp.csr_matrix(relevant.astype(np.float32)), max_cells=1000)
    expected = [
        auc_score(
            np.where(excluded[i], 0.0, scores[i]),
            set(np.flatnonzero(relevant[i])),
            set(np.flatnonzero(excluded[i])),
        )
        for i in range(len(scores))
    ]
    np.testing.assert_allclose(got, expected, equal_nan=True)
