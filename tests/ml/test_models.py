"""The recommenders on a hand-made matrix: cosine values, scores, exclusion of purchased items."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from clickstream_dagster.ml.config import KNNConfig, LightFMParams
from clickstream_dagster.ml.features import item_feature_matrix
from clickstream_dagster.ml.models import (
    TOP_K_BLOCK,
    ItemKNNRecommender,
    LightFMRecommender,
    PopularityRecommender,
    Recommender,
    UserKNNRecommender,
    top_k,
    top_k_per_row,
)
from clickstream_dagster.ml.prep import InteractionMatrix

# Visitors 100..103 x items 10..14 (weights 1). Visitor 100 bought item 11.
#        10  11  12  13  14
# 100     1   1   .   .   .
# 101     1   .   1   .   .
# 102     .   1   1   .   .
# 103     .   .   .   1   1
PAIRS = [(100, 10), (100, 11), (101, 10), (101, 12), (102, 11), (102, 12), (103, 13), (103, 14)]


def tiny() -> InteractionMatrix:
    interactions = pd.DataFrame(
        {
            "visitorid": [v for v, _ in PAIRS],
            "itemid": [i for _, i in PAIRS],
            "weight": 1.0,
            "purchases": [1 if (v, i) == (100, 11) else 0 for v, i in PAIRS],
        }
    )
    return InteractionMatrix.from_interactions(interactions)


def all_models() -> list[Recommender]:
    return [
        PopularityRecommender(),
        ItemKNNRecommender(KNNConfig(item_neighbours=10)),
        UserKNNRecommender(KNNConfig(user_neighbours=10)),
        LightFMRecommender(LightFMParams(no_components=4, epochs=5, num_threads=1)),
    ]


def test_item_cosine_by_hand() -> None:
    model = ItemKNNRecommender(KNNConfig(item_neighbours=10)).fit(tiny())
    sim = model.similarity.toarray()
    # Items 10 and 11 share one of two visitors each: 1 / (sqrt 2 * sqrt 2) = 0.5; 13 and 14 share their one.
    assert sim[0, 1] == pytest.approx(0.5)
    assert sim[3, 4] == pytest.approx(1.0)
    assert sim[0, 3] == 0.0
    assert np.diag(sim).tolist() == [0.0] * 5  # never its own neighbour in the similarity matrix
    # Visitor 101 = {10, 12}: item 11 scores sim(10,11) + sim(12,11) = 1; its own items 1 + 0.5 (self + other).
    scores = model.score([101])[0]
    assert scores.tolist() == pytest.approx([1.5, 1.0, 1.5, 0.0, 0.0])


def test_user_cosine_scores_by_hand() -> None:
    model = UserKNNRecommender(KNNConfig(user_neighbours=10)).fit(tiny())
    # Visitor 100 = {10, 11}: cosine 0.5 with 101 = {10, 12} and with 102 = {11, 12}, 0 with 103.
    # Item 12 gets 0.5 + 0.5, item 10 gets 0.5 (from 101), item 11 0.5 (from 102).
    assert model.score([100])[0].tolist() == pytest.approx([0.5, 0.5, 1.0, 0.0, 0.0])
    one = UserKNNRecommender(KNNConfig(user_neighbours=1)).fit(tiny())
    assert one.score([103])[0].tolist() == pytest.approx([0.0] * 5)  # no neighbour shares anything


def test_popularity_and_unknown_visitors() -> None:
    model = PopularityRecommender().fit(tiny())
    recs = model.recommend([999], k=3)  # unknown visitor: the popularity order, ties by lower item id
    assert recs["itemid"].tolist() == [10, 11, 12]
    assert recs["rank"].tolist() == [1, 2, 3]


@pytest.mark.parametrize("model", all_models(), ids=lambda m: m.name)
def test_purchased_items_are_never_recommended(model: Recommender) -> None:
    train = tiny()
    model.fit(train, item_feature_matrix(train.item_ids, None))
    recs = model.recommend([100, 101, 102, 103], k=5)
    assert not ((recs["visitorid"] == 100) & (recs["itemid"] == 11)).any()
    assert len(recs.loc[recs["visitorid"] == 100]) == 4  # the other 4 items
    assert len(recs.loc[recs["visitorid"] == 101]) == 5
    masked = model.masked_scores(np.array([0]))
    assert masked[0, 1] == -np.inf
    # Extra exclusions: per visitor and for everyone.
    recs = model.recommend([101, 102], k=5, exclude={101: [10]}, exclude_items=[14])
    assert not ((recs["visitorid"] == 101) & (recs["itemid"] == 10)).any()
    assert 14 not in set(recs["itemid"])


def test_top_k_helpers() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.9], [3.0, -np.inf, 1.0, 2.0]], dtype=np.float32)
    idx, vals = top_k(scores, 3)
    assert idx.tolist() == [[1, 3, 2], [0, 3, 2]]  # ties: the lower index first
    assert vals[1].tolist() == [3.0, 2.0, 1.0]
    m = sp.csr_matrix(np.array([[0.1, 0.7, 0.3, 0.0], [0.0, 0.2, 0.0, 0.0]]))
    kept = top_k_per_row(m, 2).toarray()
    np.testing.assert_allclose(kept, [[0.0, 0.7, 0.3, 0.0], [0.0, 0.2, 0.0, 0.0]])


def test_top_k_by_blocks_matches_a_full_sort() -> None:
    """The block-maximum shortcut is exact: same items and order as a stable full sort, on wide rows of
    distinct scores (the shortcut), of few distinct values (ties: the full path) and half -inf."""
    rng = np.random.default_rng(7)
    shortcut_rows = 0
    for trial in range(60):
        n = int(rng.integers(4 * TOP_K_BLOCK * 10, 4 * TOP_K_BLOCK * 60))
        k = int(rng.integers(1, 40))
        if trial % 3 == 0:
            x = rng.standard_normal((6, n)).astype(np.float32)
        elif trial % 3 == 1:
            x = rng.integers(0, int(rng.integers(2, 50)), (6, n)).astype(np.float32)
        else:
            x = rng.standard_normal((6, n)).astype(np.float32)
            x[:, rng.random(n) < 0.5] = -np.inf
        x[0, :] = -np.inf  # a row with nothing to recommend
        idx, vals = top_k(x, k)
        order = np.lexsort((np.broadcast_to(np.arange(n), x.shape), -x), axis=1)[:, :k]
        expected = np.take_along_axis(x, order, axis=1)
        np.testing.assert_array_equal(vals, expected)
        np.testing.assert_array_equal(np.take_along_axis(x, idx, axis=1), vals)
        assert all(len(set(row)) == k for row in idx.tolist())
        above = expected > expected[:, -1:]  # above the k-th score, the order is unique (ties: lower index)
        assert idx[above].tolist() == order[above].tolist(), trial
        shortcut_rows += int((np.sort(x, axis=1)[:, -k:] > -np.inf).all(axis=1).sum())
    assert shortcut_rows > 100  # rows the shortcut could take were in the sample


def test_lightfm_training_can_continue() -> None:
    train = tiny()
    model = LightFMRecommender(LightFMParams(no_components=4, epochs=2, num_threads=1))
    model.fit(train, item_feature_matrix(train.item_ids, None))
    assert model.epochs_done == 2
    model.train_more(3)
    assert model.epochs_done == 5
    assert len(model.epoch_seconds) == 5
    assert model.item_embeddings.shape == (5, 4)
    assert model.score([100, 555]).shape == (2, 5)
    before = model.score([100, 101])
    model.compact()  # what a served bundle keeps: the representations, not the optimiser state
    np.testing.assert_array_equal(model.score([100, 101]), before)
    with pytest.raises(RuntimeError, match="cannot continue training"):
        model.train_more(1)


def test_lightfm_warp_kos_trains_without_sample_weights_and_says_so_otherwise() -> None:
    rng = np.random.default_rng(0)
    pairs = pd.DataFrame({"visitorid": rng.integers(0, 200, 1_000), "itemid": rng.integers(0, 100, 1_000)})
    pairs = pairs.drop_duplicates().assign(weight=1.0, purchases=0)
    train = InteractionMatrix.from_interactions(pairs)  # k-OS needs more items than the 4 x 5 case
    features = item_feature_matrix(train.item_ids, None)
    kos = LightFMParams(no_components=4, epochs=2, num_threads=1, loss="warp-kos", sample_weight="none")
    model = LightFMRecommender(kos).fit(train, features)
    assert model.epochs_done == 2 and np.isfinite(model.score(train.user_ids[:5])).all()
    weighted = LightFMParams(no_components=4, epochs=1, num_threads=1, loss="warp-kos", sample_weight="log1p")
    with pytest.raises(ValueError, match='warp-kos loss: set sample_weight to "none"'):
        LightFMRecommender(weighted).fit(train, features)
