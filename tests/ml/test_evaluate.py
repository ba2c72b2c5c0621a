"""The evaluation fold and `evaluate_model` end to end on a hand-made case, and the grid's time budget."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clickstream_dagster.ml.config import CleaningConfig, GridConfig, MLParams
from clickstream_dagster.ml.evaluate import Fold, evaluate_model, make_fold, select_lightfm
from clickstream_dagster.ml.models import PopularityRecommender
from clickstream_dagster.ml.prep import clean_events

T0 = 1_433_000_000_000


def events(rows: list[tuple[int, str, int]], start: int) -> pd.DataFrame:
    """(visitorid, event, itemid) rows, one second apart from `start`."""
    frame = pd.DataFrame(
        {
            "timestamp": [start + 1000 * n for n in range(len(rows))],
            "visitorid": [v for v, _, _ in rows],
            "event": [e for _, e, _ in rows],
            "itemid": [i for _, _, i in rows],
            "transactionid": [1 if e == "transaction" else None for _, e, _ in rows],
        }
    )
    return clean_events(frame)[0]


@pytest.fixture
def fold() -> Fold:
    fit = events(
        [
            (1, "view", 10),
            (1, "view", 11),
            (1, "transaction", 11),  # visitor 1 bought 11
            (2, "view", 10),
            (2, "view", 12),
            (3, "view", 12),
            (3, "view", 13),
        ],
        T0,
    )
    later = events(
        [
            (1, "view", 11),  # bought before: not relevant (never recommended)
            (1, "view", 13),
            (2, "view", 14),  # an item outside the catalogue: visitor 2 has nothing to find
            (4, "view", 10),  # a cold visitor: not scored
            (3, "view", 10),
        ],
        T0 + 10**6,
    )
    params = MLParams.from_dict({"cleaning": {"min_item_events": 1, "min_visitor_events": 1}})
    assert params.cleaning == CleaningConfig(min_item_events=1, min_visitor_events=1)
    return make_fold("test", fit, later, None, params)


def test_fold_scores_warm_visitors_on_recommendable_items(fold: Fold) -> None:
    users = fold.data.matrix.user_ids[fold.eval_users].tolist()
    assert users == [1, 3]
    items = fold.data.matrix.item_ids
    assert [items[r.indices].tolist() for r in fold.relevant] == [[13], [10]]
    assert fold.counts["eval_visitors"] == 4


def test_evaluate_model_by_hand(fold: Fold) -> None:
    model = PopularityRecommender().fit(fold.data.matrix)
    got = evaluate_model(model, fold, k=2)
    # Distinct visitors: 10 -> 2, 11 -> 1, 12 -> 2, 13 -> 1, so the top 2 is [10, 12] for both visitors
    # (visitor 1's purchase 11 is masked anyway). Visitor 1 wants 13: no hit. Visitor 3 wants 10: hit at 1.
    assert got["precision"] == pytest.approx((0 + 1 / 2) / 2)
    assert got["recall"] == pytest.approx((0 + 1) / 2)
    assert got["f1"] == pytest.approx((0 + 2 * 0.5 * 1 / 1.5) / 2)
    assert got["ndcg"] == pytest.approx((0 + 1) / 2)
    # AUC. Visitor 1: candidates 10 (2), 12 (2), 13 (1) -- 11 excluded; 13 loses both pairs: 0.
    # Visitor 3: 10 (2) beats 11 and 13 (1), ties 12 (2): 2.5 / 3.
    assert got["auc"] == pytest.approx((0 + 2.5 / 3) / 2)
    assert got["coverage"] == pytest.approx(2 / 4)
    assert got["users"] == 2


def test_grid_respects_its_time_budget(fold: Fold) -> None:
    grid = GridConfig(no_components=(8, 4), item_alpha=(0.0,), epochs=(1, 2), max_seconds=0.0, k=2)
    chosen, table = select_lightfm(fold, grid)
    # The smallest model runs first and always; the budget of 0 s then skips the rest.
    assert table["no_components"].unique().tolist() == [4]
    assert table["epochs"].tolist() == [1, 2]
    assert chosen.no_components == 4 and chosen.epochs in (1, 2)


@pytest.mark.parametrize("patience", [1, 2])
def test_grid_stops_a_combination_after_patience_checkpoints_without_progress(
    fold: Fold, patience: int
) -> None:
    epochs = tuple(range(1, 31))
    grid = GridConfig(no_components=(4,), item_alpha=(0.0,), epochs=epochs, patience=patience, k=2)
    chosen, table = select_lightfm(fold, grid)
    scores = table["score"].tolist()
    assert table["epochs"].tolist() == list(epochs[: len(scores)])
    best, since = -1.0, 0
    for i, score in enumerate(scores):  # what early stopping should have done, replayed on the scores
        assert since < patience, f"checkpoint {i} ran after {since} without progress: {scores}"
        best, since = (score, 0) if score > best else (best, since + 1)
    assert len(scores) == len(epochs) or since == patience  # it stopped only for lack of progress
    # a 4-component model on 4 visitors stops improving long before 30 epochs
    assert len(scores) < len(epochs)
    assert chosen.epochs == int(table["epochs"].to_numpy()[int(np.argmax(table["score"].to_numpy()))])
