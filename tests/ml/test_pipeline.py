"""The whole ML library on 250k generated events: split without leakage, LightFM beats popularity, the
next-item evaluation, serving rows and the model bundle. One evaluation is shared by the module (~40 s)."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from clickstream_dagster.data.generator import generate
from clickstream_dagster.ml.bundle import ModelBundle, dumps_bundle, load_bundle, loads_bundle, save_bundle
from clickstream_dagster.ml.config import MLParams
from clickstream_dagster.ml.evaluate import EvaluationReport, Fold, full_evaluation, run_full_evaluation
from clickstream_dagster.ml.models import LightFMRecommender
from clickstream_dagster.ml.nextitem import SessionData
from clickstream_dagster.ml.prep import read_csv_dir
from clickstream_dagster.ml.ranking import (
    active_visitors,
    popular_items,
    recommendations_for_visitors,
    similar_items,
)

EVENTS = 250_000
K = 10
# A small grid keeps the module near 40 s; the library default searches 4 combinations x (10, 20, 40) epochs.
PARAMS = {
    "grid": {"no_components": [32], "item_alpha": [0.0], "epochs": [10, 30], "max_seconds": 60},
}


def _on_test(report: EvaluationReport) -> Fold:
    assert report.test is not None  # full_evaluation always evaluates on test
    return report.test


def _sessions(report: EvaluationReport) -> SessionData:
    assert report.sessions is not None
    return report.sessions


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    out = tmp_path_factory.mktemp("retailrocket")
    generate(out, EVENTS, seed=11)
    return read_csv_dir(out)


@pytest.fixture(scope="module")
def report(raw: tuple[pd.DataFrame, pd.DataFrame]) -> Iterator[EvaluationReport]:
    events, items = raw
    logging.getLogger("clickstream_dagster.ml").setLevel(logging.INFO)
    yield full_evaluation(events, items, MLParams.from_dict(PARAMS))


def by_model(table: pd.DataFrame) -> dict[str, dict[str, Any]]:
    return {str(r["model"]): {str(k): v for k, v in r.items()} for r in table.to_dict("records")}


def metric(report: EvaluationReport, model: str, column: str) -> float:
    return float(by_model(report.table)[model][column])


def test_cleaning_finds_the_generated_bots(report: EvaluationReport) -> None:
    c = report.cleaning
    assert c["rows_in"] == EVENTS
    assert c["duplicate_events"] == 0 and c["missing_values"] == 0
    assert 1 <= c["bot_visitors"] <= 4  # Plan.bots is 2 at this scale
    assert c["rows_out"] == EVENTS - c["bot_events"]


def test_split_is_time_ordered_without_leakage(report: EvaluationReport) -> None:
    s = report.split
    total = len(s.train) + len(s.validation) + len(s.test)
    assert total == report.cleaning["rows_out"]
    assert len(s.train) / total == pytest.approx(0.70, abs=0.01)
    assert len(s.test) / total == pytest.approx(0.15, abs=0.01)
    assert s.train["timestamp"].max() < s.validation_start_ms <= s.validation["timestamp"].min()
    assert s.validation["timestamp"].max() < s.test_start_ms <= s.test["timestamp"].min()
    # What the final models were fitted on ends before the test period, interaction by interaction.
    fit = _on_test(report).data
    assert fit.events["timestamp"].max() < s.test_start_ms
    assert fit.interactions["last_ts"].max() < s.test_start_ms
    assert report.validation.data.events["timestamp"].max() < s.validation_start_ms
    # A (visitor, item) pair that only occurs in test has no training interaction.
    before = set(zip(s.train_and_validation["visitorid"], s.train_and_validation["itemid"], strict=True))
    test_only = {p for p in zip(s.test["visitorid"], s.test["itemid"], strict=True) if p not in before}
    fitted = set(zip(fit.interactions["visitorid"], fit.interactions["itemid"], strict=True))
    assert test_only and not (test_only & fitted)
    # Interaction counts are recomputable from the pre-test events alone.
    views = fit.events.loc[fit.events["event"] == "view"].groupby(["visitorid", "itemid"]).size()
    table = fit.interactions.set_index(["visitorid", "itemid"])["views"]
    assert table.loc[table > 0].sort_index().equals(views.sort_index())


def test_lightfm_clearly_beats_popularity(report: EvaluationReport) -> None:
    print("\n" + report.table.to_string())
    print(report.grid.to_string())
    assert _on_test(report).counts["eval_users"] >= 300
    for column in (f"recall@{K}", f"ndcg@{K}"):
        lightfm, popularity = metric(report, "lightfm", column), metric(report, "popularity", column)
        assert lightfm >= 1.2 * popularity, f"{column}: lightfm {lightfm:.4f} vs popularity {popularity:.4f}"
    # The CF baselines learn taste too; every model's numbers are in range.
    for model in ("popularity", "item_knn", "user_knn", "lightfm"):
        row = by_model(report.table)[model]
        for column in (f"precision@{K}", f"recall@{K}", f"f1@{K}", f"ndcg@{K}", "auc", f"coverage@{K}"):
            assert 0.0 <= row[column] <= 1.0, (model, column)
    assert metric(report, "lightfm", "auc") > 0.7
    assert metric(report, "lightfm", f"coverage@{K}") > 5 * metric(report, "popularity", f"coverage@{K}")


def test_recommendations_never_include_purchased_items(report: EvaluationReport) -> None:
    fit = _on_test(report).data
    bought = fit.interactions.loc[fit.interactions["purchases"] > 0, ["visitorid", "itemid"]]
    buyers = bought["visitorid"].unique()
    assert len(buyers) > 50
    for name, model in report.models.items():
        recs = model.recommend(buyers, k=50)
        clash = recs.merge(bought, on=["visitorid", "itemid"])
        assert clash.empty, f"{name} recommended {len(clash)} purchased items"
        assert recs.groupby("visitorid").size().min() == 50


def test_next_item_evaluation_is_plausible(report: EvaluationReport) -> None:
    nxt = by_model(report.next_item)
    print("\n" + report.next_item.to_string())
    assert _sessions(report).counts["test_sessions"] > 500
    assert all(r["predictions"] > 1000 for r in nxt.values())
    for model in ("pop", "markov", "sknn", "item_knn", "lightfm_emb"):
        hr, mrr = nxt[model]["hr@20"], nxt[model]["mrr@20"]
        assert 0.0 < mrr <= hr <= 1.0, model
    # Taste and session structure beat popularity by far; SKNN is in the range published for real data.
    for model in ("markov", "sknn", "item_knn", "lightfm_emb"):
        assert nxt[model]["hr@20"] > 1.5 * nxt["pop"]["hr@20"], model
    assert 0.3 < nxt["sknn"]["hr@20"] < 0.95


def test_serving_rows(report: EvaluationReport) -> None:
    lightfm = report.models["lightfm"]
    assert isinstance(lightfm, LightFMRecommender)
    events = _on_test(report).data.events
    active = active_visitors(events, report.split.test_start_ms - 7 * 86_400_000)
    recs = recommendations_for_visitors(lightfm, np.r_[active, [-1]], n=20)
    assert set(recs["visitorid"]) <= set(lightfm.user_ids) and -1 not in set(recs["visitorid"])
    assert recs.groupby("visitorid")["rank"].max().eq(20).all()

    similar = similar_items(lightfm, k=10)
    assert len(similar) == 10 * len(lightfm.item_ids)
    assert not (similar["itemid"] == similar["similar_itemid"]).any()
    assert similar.groupby("itemid")["score"].apply(lambda s: s.is_monotonic_decreasing).all()
    assert similar["score"].between(-1.0001, 1.0001).all()

    popular = popular_items(events, n=50)
    assert set(popular["list"]) == {"popular", "trending"}
    top = popular.loc[popular["list"] == "popular"]
    assert top["rank"].tolist() == list(range(1, 51))
    assert top["score"].is_monotonic_decreasing
    trending = popular.loc[popular["list"] == "trending"]
    assert trending["score"].is_monotonic_decreasing and (trending["recent_events"] >= 3).all()


def test_bundle_round_trip(report: EvaluationReport, tmp_path: Path) -> None:
    model = report.models["lightfm"]
    bundle = ModelBundle(
        model=model,
        params=MLParams.from_dict(PARAMS).to_dict(),
        metrics={
            k: float(v) for k, v in by_model(report.table)["lightfm"].items() if k != "model" and pd.notna(v)
        },
        data_window={
            "start_ms": int(_on_test(report).data.events["timestamp"].min()),
            "end_ms": report.split.test_start_ms,
        },
    )
    users = model.user_ids[:100]
    for loaded in (
        loads_bundle(dumps_bundle(bundle)),
        load_bundle(save_bundle(bundle, tmp_path / "models" / "lightfm.pkl")),
    ):
        assert loaded.params == bundle.params and loaded.metrics == bundle.metrics
        assert loaded.data_window == bundle.data_window and loaded.versions["lightfm"] == "1.17"
        np.testing.assert_array_equal(loaded.item_ids, model.item_ids)
        np.testing.assert_array_equal(loaded.user_ids, model.user_ids)
        np.testing.assert_allclose(loaded.model.score(users), model.score(users))
        pd.testing.assert_frame_equal(loaded.model.recommend(users, 10), model.recommend(users, 10))
    with pytest.raises(TypeError, match="ModelBundle"):
        loads_bundle(pickle.dumps({"not": "a bundle"}))


def test_run_full_evaluation_for_benches(tmp_path: Path) -> None:
    generate(tmp_path, 40_000, seed=3)
    events, items = read_csv_dir(tmp_path)
    params = {
        "grid": None,
        "lightfm": {"no_components": 16, "epochs": 5},
        "session": {"max_test_sessions": 200},
    }
    table, timings, peak_mb = run_full_evaluation(events, items, params)
    assert table["model"].tolist() == [
        "popularity",
        "item_knn",
        "user_knn",
        "session_knn",
        "lightfm",
        "markov",
        "sknn",
    ]
    assert {
        "data_prep",
        "grid_search",
        "fit_lightfm",
        "lightfm_seconds_per_epoch",
        "next_item",
        "total",
    } <= set(timings)
    assert 0 < timings["data_prep"] < timings["total"]
    assert peak_mb > 50
