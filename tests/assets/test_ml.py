"""The `ml` assets on real PostgreSQL with real LightFM models trained on generated data: the promotion gate
promotes a good model, rejects a deliberately bad one (which stays in the registry with its reason), and
every serving table is rebuilt from whichever model is promoted.

One database and three training runs are shared by the module (~1-2 min): good model, bad model, good again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import psycopg
import pytest

from clickstream_dagster.assets.ml import (
    lightfm_model,
    ml_dataset,
    ml_features,
    ml_interactions,
    popular_items,
    promoted_model,
    promotion_gate,
    recommendations,
    similar_items,
)
from clickstream_dagster.assets.reference import category_tree, item_properties, items
from clickstream_dagster.data.generator import generate
from clickstream_dagster.ml.bundle import load_bundle
from clickstream_dagster.resources import PostgresResource
from clickstream_dagster.stack.config import StackConfig
from tests.conftest import create_database, drop_database

EVENTS = 120_000
K = 10
# One small grid keeps each training run short; the gate and the tables do not depend on its size.
GOOD = {"grid": {"no_components": [32], "item_alpha": [0.0], "epochs": [10, 30], "max_seconds": 60}}
# Two components, one epoch at a tiny learning rate: barely better than random.
BAD = {"grid": None, "lightfm": {"no_components": 2, "epochs": 1, "learning_rate": 0.0005}}
ML_ASSETS = [
    ml_dataset,
    ml_interactions,
    ml_features,
    lightfm_model,
    promoted_model,
    recommendations,
    similar_items,
    popular_items,
]


@dataclass
class Run:
    result: dg.ExecuteInProcessResult
    registry: list[dict[str, Any]]  # every registry row after the run, by version
    promoted: int | None


@pytest.fixture(scope="module")
def db(stack_config: StackConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = create_database(stack_config)
    raw = tmp_path_factory.mktemp("retailrocket")
    generate(raw, EVENTS, seed=5)
    _load_events(url, raw / "events.csv")
    reference = dg.materialize(
        [category_tree, item_properties, items],
        resources={"postgres": PostgresResource(url=url)},
        run_config={
            "ops": {a: {"config": {"raw_dir": str(raw)}} for a in ("category_tree", "item_properties")}
        },
    )
    assert reference.success
    yield url
    drop_database(stack_config, url)


def _load_events(url: str, path: Path) -> None:
    """Generated events.csv straight into clickstream_events (the ingestion path has its own tests)."""
    frame = pd.read_csv(path)
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        copy_sql = (
            'COPY clickstream_events ("timestamp", event_time, visitorid, event, itemid, transactionid, '
            "kafka_topic, kafka_partition, kafka_offset) FROM STDIN"
        )
        columns = zip(
            frame["timestamp"].tolist(),
            pd.to_datetime(frame["timestamp"], unit="ms", utc=True).dt.to_pydatetime().tolist(),
            frame["visitorid"].tolist(),
            frame["event"].tolist(),
            frame["itemid"].tolist(),
            frame["transactionid"].astype("Int64").astype(object).where(frame["transactionid"].notna(), None),
            strict=True,
        )
        with cur.copy(copy_sql) as copy:
            for offset, row in enumerate(columns):
                copy.write_row((*row, "gen", 0, offset))


def _train(url: str, models: Path, params: dict[str, Any]) -> Run:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLICKSTREAM_MODELS_DIR", str(models))
        result = dg.materialize(
            [*ML_ASSETS, promotion_gate],
            resources={"postgres": PostgresResource(url=url)},
            run_config={
                "ops": {
                    "ml_dataset": {"config": {"params_json": json.dumps(params)}},
                    "lightfm_model": {"config": {"params_json": json.dumps(params)}},
                }
            },
            raise_on_error=False,
        )
    with psycopg.connect(url) as conn:
        cur = conn.execute(
            "SELECT version, status, reason, metrics, artefact_path, dagster_run_id, data_window "
            "FROM model_registry ORDER BY version"
        )
        names = [d.name for d in cur.description or []]
        registry = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    promoted = [r["version"] for r in registry if r["status"] == "promoted"]
    return Run(result, registry, promoted[0] if promoted else None)


@pytest.fixture(scope="module")
def runs(db: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    models = tmp_path_factory.mktemp("models")
    out: dict[str, Any] = {"models": models}
    out["good"] = _train(db, models, GOOD)
    out["tables_after_good"] = _serving_versions(db)
    out["bad"] = _train(db, models, BAD)
    out["tables_after_bad"] = _serving_versions(db)
    out["good_again"] = _train(db, models, GOOD)
    out["tables_after_good_again"] = _serving_versions(db)
    return out


def _serving_versions(url: str) -> dict[str, set[int]]:
    with psycopg.connect(url) as conn:
        return {
            table: {r[0] for r in conn.execute(f"SELECT DISTINCT model_version FROM {table}").fetchall()}
            for table in ("recommendations", "similar_items", "popular_items")
        }


def _check_passed(result: dg.ExecuteInProcessResult) -> bool:
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == 1 and evaluations[0].check_name == "promotion_gate"
    return evaluations[0].passed


def test_first_good_model_is_promoted_and_serving_tables_are_built(runs: dict[str, Any]) -> None:
    good: Run = runs["good"]
    assert good.result.success
    assert _check_passed(good.result)
    [row] = good.registry
    assert row["status"] == "promoted" and row["reason"].startswith("passed")
    assert runs["tables_after_good"] == {t: {row["version"]} for t in runs["tables_after_good"]}
    # The export as the prototype does: one file per version plus the promoted one, loadable.
    assert Path(row["artefact_path"]).is_file()
    promoted = load_bundle(runs["models"] / "promoted.pkl")
    assert len(promoted.item_ids) > 100


def test_lightfm_clearly_beats_popularity_on_test(runs: dict[str, Any]) -> None:
    test = runs["good"].registry[0]["metrics"]["test"]
    assert set(test) >= {"lightfm", "popularity", "item_knn", "user_knn"}
    for metric in (f"recall@{K}", f"ndcg@{K}"):
        assert test["lightfm"][metric] > 1.2 * test["popularity"][metric], (metric, test)
    for model in test.values():  # every metric reported for every model
        assert {f"precision@{K}", f"recall@{K}", f"f1@{K}", f"ndcg@{K}", "auc", f"coverage@{K}"} <= set(model)


def test_bad_model_is_rejected_with_reason_and_nothing_is_rebuilt(runs: dict[str, Any]) -> None:
    bad: Run = runs["bad"]
    assert not _check_passed(bad.result)
    first, second = bad.registry
    assert second["status"] == "rejected"
    assert second["reason"].startswith("rejected:") and "popularity" in second["reason"]
    assert bad.promoted == first["version"]  # the good model is still served
    assert runs["tables_after_bad"] == runs["tables_after_good"]
    events = bad.result.get_asset_materialization_events()
    materialized = {e.asset_key.path[-1] for e in events if e.asset_key is not None}
    assert "lightfm_model" in materialized
    assert materialized.isdisjoint({"promoted_model", "recommendations", "similar_items"})


def test_next_good_model_replaces_the_promoted_one(runs: dict[str, Any]) -> None:
    again: Run = runs["good_again"]
    assert again.result.success and _check_passed(again.result)
    first, second, third = again.registry
    assert (first["status"], second["status"], third["status"]) == ("retired", "rejected", "promoted")
    assert third["metrics"]["champion"] == {"version": first["version"], "same_configuration": True}
    validation = third["metrics"]["validation"]
    assert set(validation) == {"candidate", "popularity", "champion"}
    # Every table holds the new version; the previous one stays beside it (readers filter on the version)
    # until the next promotion prunes it.
    after = {t: {first["version"], third["version"]} for t in runs["tables_after_good_again"]}
    assert runs["tables_after_good_again"] == after


def test_recommendations_never_include_purchased_items(db: str, runs: dict[str, Any]) -> None:
    with psycopg.connect(db) as conn:
        leaked = conn.execute(
            """
            SELECT count(*) FROM recommendations r
            JOIN clickstream_events e
              ON e.visitorid = r.visitorid AND e.itemid = r.itemid AND e.event = 'transaction'
            """
        ).fetchone()
        buyers = conn.execute(
            """
            SELECT count(DISTINCT r.visitorid) FROM recommendations r
            WHERE r.model_version = (SELECT max(model_version) FROM popular_items) AND EXISTS (SELECT 1 FROM clickstream_events e
                          WHERE e.visitorid = r.visitorid AND e.event = 'transaction')
            """
        ).fetchone()
        per_visitor = conn.execute(
            "SELECT min(n), max(n) FROM (SELECT count(*) AS n FROM recommendations "
            "WHERE model_version = (SELECT max(model_version) FROM popular_items) GROUP BY visitorid) s"
        ).fetchone()
    assert leaked == (0,)
    assert buyers is not None and buyers[0] > 10  # the exclusion was exercised, not vacuous
    assert per_visitor == (20, 20)


def test_similar_items_are_ranked_cosine_neighbours(db: str, runs: dict[str, Any]) -> None:
    bundle = load_bundle(runs["models"] / "promoted.pkl")
    with psycopg.connect(db) as conn:
        frame = pd.DataFrame(
            conn.execute(
                "SELECT itemid, rank, similar_itemid, score FROM similar_items WHERE model_version = (SELECT max(model_version) FROM popular_items)"
            ).fetchall(),
            columns=["itemid", "rank", "similar_itemid", "score"],
        )
    assert set(frame["itemid"]) == set(bundle.item_ids.tolist())
    assert not (frame["itemid"] == frame["similar_itemid"]).any()
    ordered = frame.sort_values(["itemid", "rank"])
    assert (ordered.groupby("itemid")["score"].diff().dropna() <= 1e-6).all()
    assert frame["score"].between(-1.0001, 1.0001).all()


def test_popular_fallback_lists(db: str, runs: dict[str, Any]) -> None:
    with psycopg.connect(db) as conn:
        lists: dict[str, int] = dict(
            conn.execute(
                "SELECT list, count(*) FROM popular_items WHERE model_version = (SELECT max(model_version) FROM popular_items) GROUP BY list"
            ).fetchall()
        )
        top = conn.execute(
            "SELECT itemid, visitors FROM popular_items WHERE list = 'popular' AND rank = 1 "
            "AND model_version = (SELECT max(model_version) FROM popular_items)"
        ).fetchone()
        most = conn.execute(
            """
            SELECT count(DISTINCT visitorid) FROM clickstream_events
            WHERE "timestamp" > (SELECT max("timestamp") FROM clickstream_events) - 30::bigint * 86400000
            GROUP BY itemid ORDER BY 1 DESC LIMIT 1
            """
        ).fetchone()
    assert lists == {"popular": 100, "trending": 100}
    assert top is not None and most is not None
    # Cleaning removes bots, so the cleaned count can only be lower than the raw one, and not by much.
    assert 0.8 * most[0] <= top[1] <= most[0]


def test_training_data_split_is_time_ordered(db: str, runs: dict[str, Any]) -> None:
    with psycopg.connect(db) as conn:
        bounds = dict(
            (r[0], (r[1], r[2]))
            for r in conn.execute(
                "SELECT split, min(first_ts), max(last_ts) FROM ml_interactions GROUP BY split"
            ).fetchall()
        )
        features = conn.execute("SELECT count(*) FROM ml_visitor_features").fetchone()
        hours = conn.execute(
            "SELECT count(*), sum(share) FROM ml_hourly_profile WHERE event = 'view'"
        ).fetchone()
    assert bounds["train"][1] < bounds["validation"][0]
    assert bounds["validation"][1] < bounds["test"][0]
    window = runs["good_again"].registry[-1]["data_window"]
    assert bounds["validation"][0] >= window["validation_start_ms"] > bounds["train"][1]
    assert bounds["test"][0] >= window["test_start_ms"] > bounds["validation"][1]
    assert features is not None and features[0] > 1000
    assert hours is not None and hours[0] == 24 and hours[1] == pytest.approx(1.0)
