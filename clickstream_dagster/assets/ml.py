"""Recommendations (group `ml`): training data from the ingested events, a LightFM model evaluated against
popularity, item-based and user-based CF, a registry with a promotion gate, and the serving tables.

    clickstream_events + items -> ml_dataset -> ml_interactions, ml_features
                                             -> lightfm_model --[promotion_gate]--> promoted_model
                                                -> recommendations, similar_items, popular_items

Evaluation protocol (time-based, also in docs/recommendations.md): cleaned events are cut at the 70th and
85th percentiles of their timestamps into train, validation and test. LightFM's hyper-parameters are chosen
on validation (fit on train); every model is then refitted on train + validation and scored on the test
events of visitors it knows, never counting items they bought before the test period. The served model is
finally refitted on all cleaned events.
"""

import hashlib
import io
import json
import math
import os
import time
from collections import defaultdict
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import Field

from clickstream_dagster.ml.bundle import ModelBundle, dumps_bundle, loads_bundle, write_atomic
from clickstream_dagster.ml.config import LightFMParams, MLParams
from clickstream_dagster.ml.dataset import MLDataset, build_dataset
from clickstream_dagster.ml.evaluate import Fold, PeakRSS, evaluate_model, evaluate_split
from clickstream_dagster.ml.features import hourly_profile, item_stats, visitor_features
from clickstream_dagster.ml.models import LightFMRecommender, PopularityRecommender
from clickstream_dagster.ml.prep import DAY_MS, EVENT_TYPES, build_interactions
from clickstream_dagster.ml.serving import popular_items as popular_rows
from clickstream_dagster.ml.serving import recommendations_for_visitors
from clickstream_dagster.ml.serving import similar_items as similar_rows
from clickstream_dagster.ml.train import prepare_training_data, train_lightfm
from clickstream_dagster.resources import PostgresResource
from clickstream_dagster.sql import ml as q
from clickstream_dagster.stack.config import project_root

GROUP = "ml"
ML_DATASET = dg.AssetKey("ml_dataset")
ML_INTERACTIONS = dg.AssetKey("ml_interactions")
ML_FEATURES = dg.AssetKey("ml_features")
LIGHTFM_MODEL = dg.AssetKey("lightfm_model")
PROMOTED_MODEL = dg.AssetKey("promoted_model")
RECOMMENDATIONS = dg.AssetKey("recommendations")
SIMILAR_ITEMS = dg.AssetKey("similar_items")
POPULAR_ITEMS = dg.AssetKey("popular_items")
PROMOTION_GATE = "promotion_gate"


def models_dir() -> Path:
    """Where models are exported as .pkl (CLICKSTREAM_MODELS_DIR, default models/ in the project)."""
    return Path(os.environ.get("CLICKSTREAM_MODELS_DIR") or project_root() / "models")


# --- training data -----------------------------------------------------------------------------------------


class DatasetConfig(dg.Config):
    params_json: str = Field(
        default="{}",
        description="ML settings as JSON, merged over the defaults of clickstream_dagster.ml.config.MLParams "
        'e.g. {"cleaning": {"min_item_events": 3}, "grid": {"max_seconds": 120}}',
    )
    window_days: float | None = Field(
        default=None, description="Train on the last N days of event time only (default: everything)"
    )


@dg.asset(
    key=ML_DATASET,
    group_name=GROUP,
    kinds={"pandas", "postgres"},
    deps=[dg.AssetKey("raw_events"), dg.AssetKey("items")],
)
def ml_dataset(
    context: dg.AssetExecutionContext, config: DatasetConfig, postgres: PostgresResource
) -> dg.Output[MLDataset]:
    """Ingested events cleaned (missing values, duplicates, bots; each step counted) and cut by time into
    train 70 % / validation 15 % / test 15 % at the 70th and 85th percentiles of event time. Protocol:
    hyper-parameters are chosen on validation (fit on train); every model is refitted on train + validation
    and scored on test for the visitors it knows, never counting items bought before the test period; the
    served model is refitted on everything (docs/recommendations.md)."""
    params = MLParams.from_dict(json.loads(config.params_json))
    started = time.perf_counter()
    with postgres.connection() as conn:
        since = _window_start(conn, config.window_days)
        events = _read_events(conn, since)
        items = _read_items(conn)
    context.log.info(
        f"read {len(events):,} events and {len(items):,} items in {time.perf_counter() - started:.1f} s"
    )
    dataset = build_dataset(events, items if len(items) else None, params)
    split = dataset.split.summary()
    context.log.info(f"cleaning: {dataset.cleaning}; split: {split}")
    return dg.Output(
        dataset,
        metadata={
            "dagster/row_count": len(dataset.events),
            "rows_read": len(events),
            "cleaning": dg.MetadataValue.json(dataset.cleaning),
            "split": dg.MetadataValue.json(split),
            "items_known": len(items),
            "validation_start": _iso(dataset.validation_start_ms),
            "test_start": _iso(dataset.test_start_ms),
        },
    )


def _window_start(conn: psycopg.Connection, window_days: float | None) -> int:
    if window_days is None:
        return 0
    row = conn.execute(q.MAX_EVENT_TIMESTAMP).fetchone()
    newest = int(row[0]) if row and row[0] is not None else 0
    return max(newest - int(window_days * DAY_MS), 0)


def _read_events(conn: psycopg.Connection, since_ms: int) -> pd.DataFrame:
    buf = io.BytesIO()
    statement = sql.SQL(q.COPY_EVENTS_OUT).format(since_ms=sql.Literal(since_ms))
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for block in copy:
            buf.write(block)
    buf.seek(0)
    return pd.read_csv(
        buf,
        dtype={"timestamp": "int64", "visitorid": "int64", "event": "category", "itemid": "int64"},
    )


def _read_items(conn: psycopg.Connection) -> pd.DataFrame:
    rows = conn.execute(q.SELECT_ITEMS).fetchall()
    return pd.DataFrame(rows, columns=["itemid", "categoryid", "available", "category_path"])


@dg.asset(key=ML_INTERACTIONS, group_name=GROUP, kinds={"pandas", "postgres"})
def ml_interactions(
    context: dg.AssetExecutionContext, ml_dataset: MLDataset, postgres: PostgresResource
) -> dg.MaterializeResult:
    """One row per (visitor, item) and split: strength = sum of event-type weights (transaction > addtocart
    > view) decayed by age, with view/cart/purchase counts."""
    split = ml_dataset.split
    ref_ms = int(ml_dataset.events["timestamp"].max())
    parts = {"train": split.train, "validation": split.validation, "test": split.test}
    with postgres.connection() as conn:
        conn.execute(q.DELETE_INTERACTIONS)
        with conn.cursor() as cur, cur.copy(q.COPY_INTERACTIONS) as copy:
            copy.set_types(q.INTERACTION_TYPES)
            for name, events in parts.items():
                table = build_interactions(events, ml_dataset.params.interactions, ref_ms)
                cols = [table[c].to_numpy() for c in ("visitorid", "itemid", "weight", "views", "carts",
                                                      "purchases", "first_ts", "last_ts")]  # fmt: skip
                for row in zip(*(c.tolist() for c in cols), strict=True):
                    copy.write_row((name, *row))
                context.log.info(f"{name}: {len(table):,} interactions")
        summary = conn.execute(q.INTERACTIONS_BY_SPLIT).fetchall()
    per_split = {r[0]: {"interactions": r[1], "visitors": r[2], "items": r[3]} for r in summary}
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": sum(v["interactions"] for v in per_split.values()),
            "per_split": dg.MetadataValue.json(per_split),
            "event_weights": dg.MetadataValue.json(ml_dataset.params.interactions.event_weights),
            "half_life_days": ml_dataset.params.interactions.half_life_days or 0.0,
        }
    )


@dg.asset(key=ML_FEATURES, group_name=GROUP, kinds={"pandas", "postgres"})
def ml_features(
    context: dg.AssetExecutionContext, ml_dataset: MLDataset, postgres: PostgresResource
) -> dg.MaterializeResult:
    """Visitor behaviour (recency, frequency, cart and purchase rates, active hours), item popularity and
    trend with category path and availability, and the time-of-day profile, over all cleaned events."""
    events = ml_dataset.events
    visitors = visitor_features(events)
    item_frame = item_stats(events)
    if ml_dataset.items is not None:
        item_frame = item_frame.merge(ml_dataset.items, on="itemid", how="left")
        item_frame["categoryid"] = item_frame["categoryid"].astype("Int64")
    else:
        item_frame = item_frame.assign(categoryid=None, category_path=None, available=None)
    hourly = hourly_profile(events)
    hourly_rows = [
        (int(r["hour"]), event, int(r[f"{event}_events"]), float(r[f"{event}_share"]))
        for r in hourly.to_dict("records")
        for event in EVENT_TYPES
    ]
    with postgres.connection() as conn:
        conn.execute(q.DELETE_VISITOR_FEATURES)
        _copy_frame(
            conn, q.COPY_VISITOR_FEATURES, q.VISITOR_FEATURE_TYPES, visitors, q.VISITOR_FEATURE_COLUMNS
        )
        conn.execute(q.DELETE_ITEM_FEATURES)
        _copy_frame(conn, q.COPY_ITEM_FEATURES, q.ITEM_FEATURE_TYPES, item_frame, q.ITEM_FEATURE_COLUMNS)
        conn.execute(q.DELETE_HOURLY_PROFILE)
        _copy_rows(conn, q.COPY_HOURLY_PROFILE, q.HOURLY_PROFILE_TYPES, hourly_rows)
    context.log.info(f"features: {len(visitors):,} visitors, {len(item_frame):,} items")
    peak = int(hourly["hour"].to_numpy()[hourly["view_events"].to_numpy().argmax()]) if len(hourly) else 0
    return dg.MaterializeResult(
        metadata={
            "visitors": len(visitors),
            "items": len(item_frame),
            "items_with_category": int(item_frame["categoryid"].notna().sum()),
            "peak_view_hour_utc": peak,
            "median_cart_rate": float(visitors["cart_rate"].median()) if len(visitors) else 0.0,
        }
    )


# --- the model and its gate --------------------------------------------------------------------------------


class ModelConfig(dg.Config):
    params_json: str = Field(
        default="{}",
        description="Overrides of the model settings (lightfm, grid, knn, session, k), merged over those of "
        'ml_dataset, e.g. {"grid": null, "lightfm": {"epochs": 20}}',
    )
    gate_metric: str = Field(
        default="ndcg", description="precision, recall, f1, ndcg or auc (@k on validation)"
    )
    min_lift_over_popularity: float = Field(
        default=0.0, description="The candidate must beat popularity by more than this fraction"
    )
    champion_tolerance: float = Field(
        default=0.01,
        description="...and reach at least (1 - this) x the promoted model's score: LightFM trains with "
        "2 threads (Hogwild), so the same configuration on the same data varies by about 1 %",
    )


@dg.asset(key=LIGHTFM_MODEL, group_name=GROUP, kinds={"lightfm", "postgres"})
def lightfm_model(
    context: dg.AssetExecutionContext, config: ModelConfig, ml_dataset: MLDataset, postgres: PostgresResource
) -> dg.MaterializeResult:
    """LightFM (WARP, hybrid with category features), tuned on validation, evaluated on test beside
    popularity, item-based and user-based CF, registered as a candidate with its metrics and artefact."""
    params = MLParams.from_dict({**ml_dataset.params.to_dict(), **json.loads(config.params_json)})
    dataset = replace(ml_dataset, params=params)
    with PeakRSS() as memory:
        report = evaluate_split(dataset.events, dataset.split, dataset.cleaning, dataset.items, params)
        context.log.info(f"test evaluation:\n{report.table.to_string(index=False)}")
        chosen = report.lightfm_params
        with postgres.connection() as conn:
            champion = conn.execute(q.PROMOTED_MODEL).fetchone()
        validation, champion_info = _validation_scores(report.validation, chosen, champion, params, context)
        started = time.perf_counter()
        full = prepare_training_data(dataset.events, dataset.items, params.cleaning, params.interactions,
                                     params.features)  # fmt: skip
        served = train_lightfm(full, chosen).compact()
        final_fit_seconds = time.perf_counter() - started
    metric = f"{config.gate_metric}@{params.k}" if config.gate_metric != "auc" else "auc"
    metrics = _finite(
        {
            "metric": metric,
            "validation": validation,
            "champion": champion_info,
            "test": {str(r.pop("model")): r for r in report.table.to_dict("records")},
            "gate": {
                "min_lift_over_popularity": config.min_lift_over_popularity,
                "champion_tolerance": config.champion_tolerance,
            },
            "timings": {**report.timings, "final_fit": final_fit_seconds},
            "peak_memory_mb": memory.peak_mb,
            "lightfm_seconds_per_epoch": float(np.mean(served.epoch_seconds))
            if served.epoch_seconds
            else 0.0,
        }
    )
    data_window = {**dataset.window(), "served_model": full.window, **report.split.summary()}
    bundle = ModelBundle(served, {**params.to_dict(), "lightfm": asdict(chosen)}, {}, data_window)
    artefact = dumps_bundle(bundle)
    sha = hashlib.sha256(artefact).hexdigest()
    with postgres.connection() as conn:
        row = conn.execute(
            q.INSERT_MODEL,
            {
                "model_type": "lightfm",
                "params": Jsonb(bundle.params),
                "data_window": Jsonb(data_window),
                "cleaning": Jsonb(dataset.cleaning),
                "metrics": Jsonb(metrics),
                "library_versions": Jsonb(bundle.versions),
                "artefact": artefact,
                "artefact_sha256": sha,
                "dagster_run_id": context.run.run_id,
            },
        ).fetchone()
        assert row is not None
        version = int(row[0])
        path = models_dir() / f"lightfm-v{version:04d}.pkl"
        write_atomic(path, artefact)
        conn.execute(q.SET_ARTEFACT_PATH, (str(path), version))
    context.log.info(f"registered candidate v{version} ({len(artefact) / 1e6:.1f} MB) -> {path}")
    test = metrics["test"]
    return dg.MaterializeResult(
        metadata={
            "model_version": version,
            "artefact_path": str(path),
            "artefact_mb": round(len(artefact) / 1e6, 2),
            "chosen_params": dg.MetadataValue.json(asdict(chosen)),
            f"validation_{metric}": validation["candidate"][metric],
            f"validation_{metric}_popularity": validation["popularity"][metric],
            f"test_recall@{params.k}": test["lightfm"][f"recall@{params.k}"],
            f"test_ndcg@{params.k}": test["lightfm"][f"ndcg@{params.k}"],
            "evaluation": dg.MetadataValue.md(report.table.to_markdown(index=False, floatfmt=".4f")),
            "peak_memory_mb": round(memory.peak_mb),
            "seconds": dg.MetadataValue.json({k: round(v, 2) for k, v in metrics["timings"].items()}),
        }
    )


def _validation_scores(
    fold: Fold,
    chosen: LightFMParams,
    champion: tuple[Any, ...] | None,
    params: MLParams,
    context: dg.AssetExecutionContext,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(scores per model, which promoted model was compared). The gate's evidence, all on the same validation fold (fit on train, scored on validation): the
    candidate's configuration, popularity, and the promoted model's configuration refitted on this data
    (its stored artefact saw the validation period in training, so scoring it as is would flatter it)."""
    k, seed = params.k, params.seed

    def score(model: Any) -> dict[str, float]:
        model.fit(fold.data.matrix, fold.data.item_features)
        return _rename(evaluate_model(model, fold, k, params.max_eval_users, seed), k)

    candidate = score(LightFMRecommender(chosen))
    out: dict[str, Any] = {"candidate": candidate, "popularity": score(PopularityRecommender())}
    info: dict[str, Any] = {"version": None, "same_configuration": None}
    if champion is not None:
        version, champion_params = int(champion[0]), LightFMParams(**champion[1]["lightfm"])
        same = replace(champion_params, num_threads=chosen.num_threads) == chosen
        out["champion"] = candidate if same else score(LightFMRecommender(champion_params))
        info = {"version": version, "same_configuration": same}
    context.log.info(f"validation: {json.dumps(_finite(out))}; promoted model compared: {info}")
    return out, info


def _rename(metrics: dict[str, float], k: int) -> dict[str, float]:
    return {(m if m in ("auc", "users") else f"{m}@{k}"): float(v) for m, v in metrics.items()}


@dg.asset_check(asset=LIGHTFM_MODEL, name=PROMOTION_GATE, blocking=True)
def promotion_gate(context: dg.AssetCheckExecutionContext, postgres: PostgresResource) -> dg.AssetCheckResult:
    """The candidate is served only if it beats popularity and the promoted model on validation; a
    rejected model stays in the registry with the reason."""
    with postgres.connection() as conn:
        row = conn.execute(q.CANDIDATE_OF_RUN, (context.run.run_id,)).fetchone()
        if row is None:
            return dg.AssetCheckResult(passed=False, description="this run registered no model")
        version, metrics, status = int(row[0]), row[1], row[2]
        passed, reason = gate_decision(metrics)
        conn.execute(q.PASS_GATE if passed else q.REJECT_MODEL, (reason, version))
    context.log.info(f"model v{version}: {reason}")
    validation = metrics["validation"]
    return dg.AssetCheckResult(
        passed=passed,
        description=reason,
        metadata={
            "model_version": version,
            "status_before": status,
            "candidate": validation["candidate"][metrics["metric"]],
            "popularity": validation["popularity"][metrics["metric"]],
            "champion": validation.get("champion", {}).get(metrics["metric"], float("nan")),
        },
    )


def gate_decision(metrics: dict[str, Any]) -> tuple[bool, str]:
    """(passed, reason) from a registry row's metrics; the thresholds are recorded with the model."""
    m = metrics["metric"]
    v = metrics["validation"]
    gate = metrics["gate"]
    cand, pop = v["candidate"][m], v["popularity"][m] or 0.0
    floor = pop * (1 + gate["min_lift_over_popularity"])
    if cand is None or not cand > floor:
        return False, f"rejected: validation {m} {_f(cand)} does not beat popularity {_f(pop)}"
    champion_version = metrics["champion"]["version"]
    if "champion" in v:
        champ = v["champion"][m]
        needed = champ * (1 - gate["champion_tolerance"])
        if not cand >= needed:
            return False, (
                f"rejected: validation {m} {_f(cand)} is below the promoted v{champion_version} "
                f"{_f(champ)} (tolerance {gate['champion_tolerance']:.0%})"
            )
        return True, (
            f"passed: validation {m} {_f(cand)} beats popularity {_f(pop)} and reaches the promoted "
            f"v{champion_version} {_f(champ)}"
        )
    return True, f"passed: validation {m} {_f(cand)} beats popularity {_f(pop)}; no model was promoted before"


@dg.asset(key=PROMOTED_MODEL, group_name=GROUP, kinds={"lightfm", "postgres"}, deps=[LIGHTFM_MODEL])
def promoted_model(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    """The served model: this run's candidate once the promotion gate passed (the previous one is retired);
    also exported as models/promoted.pkl."""
    with postgres.connection() as conn:
        row = conn.execute(q.CANDIDATE_OF_RUN, (context.run.run_id,)).fetchone()
        if row is None or row[2] not in ("candidate", "promoted"):
            raise dg.Failure(
                f"no model of this run can be promoted (registry row: {row and row[:1] + row[2:]})"
            )
        version = int(row[0])
        conn.execute(q.RETIRE_PROMOTED, (version,))
        if conn.execute(q.PROMOTE_MODEL, (version,)).fetchone() is None:
            raise dg.Failure(f"model v{version} could not be promoted")
        promoted = conn.execute(q.PROMOTED_MODEL).fetchone()
        assert promoted is not None
    path = models_dir() / "promoted.pkl"
    write_atomic(path, bytes(promoted[3]))
    context.log.info(f"promoted v{version}; exported {path}")
    return dg.MaterializeResult(
        metadata={"model_version": version, "artefact_path": str(path), "artefact_sha256": promoted[4]}
    )


# --- serving tables ----------------------------------------------------------------------------------------


class RecommendationsConfig(dg.Config):
    top_n: int = Field(default=20, description="Recommendations kept per visitor")
    active_days: float = Field(
        default=7.0, description="Visitors with an event in the last N days of event time"
    )
    max_visitors: int = Field(default=50_000, description="At most this many, the most recently active first")


@dg.asset(key=RECOMMENDATIONS, group_name=GROUP, kinds={"lightfm", "postgres"}, deps=[PROMOTED_MODEL])
def recommendations(
    context: dg.AssetExecutionContext, config: RecommendationsConfig, postgres: PostgresResource
) -> dg.MaterializeResult:
    """Top-N items per recently active visitor from the promoted model, never an item they bought."""
    with postgres.connection() as conn:
        version, bundle = _load_promoted(conn)
        row = conn.execute(q.MAX_EVENT_TIMESTAMP).fetchone()
        newest = int(row[0]) if row and row[0] is not None else 0
        since = newest - int(config.active_days * DAY_MS)
        active = [r[0] for r in conn.execute(q.ACTIVE_VISITORS, (since, config.max_visitors)).fetchall()]
        known = np.intersect1d(np.asarray(active, dtype=np.int64), bundle.user_ids)
        bought: dict[int, set[int]] = defaultdict(set)
        for visitor, item in conn.execute(q.PURCHASES_OF_VISITORS, (known.tolist(),)).fetchall():
            bought[int(visitor)].add(int(item))
    started = time.perf_counter()
    rows = recommendations_for_visitors(bundle.model, known, config.top_n, exclude=bought)
    context.log.info(
        f"{len(rows):,} recommendations for {len(known):,} of {len(active):,} active visitors "
        f"in {time.perf_counter() - started:.1f} s"
    )
    with postgres.connection() as conn:
        write_serving_rows(conn, "recommendations", rows, version)
        total, visitors = conn.execute(q.RECOMMENDATIONS_SUMMARY, (version,)).fetchone() or (0, 0)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": total,
            "visitors": visitors,
            "active_visitors": len(active),
            "active_unknown_to_model": len(active) - len(known),
            "model_version": version,
            "preview": dg.MetadataValue.md(rows.head(10).to_markdown(index=False)),
        }
    )


@dg.asset(key=SIMILAR_ITEMS, group_name=GROUP, kinds={"lightfm", "postgres"}, deps=[PROMOTED_MODEL])
def similar_items(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    """For every item of the promoted model, the 20 most similar items by cosine of the item embeddings."""
    with postgres.connection() as conn:
        version, bundle = _load_promoted(conn)
    model = bundle.model
    if not isinstance(model, LightFMRecommender):
        raise dg.Failure(f"promoted model v{version} is a {type(model).__name__}, not LightFM")
    started = time.perf_counter()
    rows = similar_rows(model, k=20)
    context.log.info(f"{len(rows):,} similar-item rows in {time.perf_counter() - started:.1f} s")
    with postgres.connection() as conn:
        write_serving_rows(conn, "similar_items", rows, version)
        total, items = conn.execute(q.SIMILAR_ITEMS_SUMMARY, (version,)).fetchone() or (0, 0)
    return dg.MaterializeResult(
        metadata={"dagster/row_count": total, "items": items, "model_version": version}
    )


# Written last: its rows mark the promoted version's serving rows complete, and the API switches then.
@dg.asset(
    key=POPULAR_ITEMS,
    group_name=GROUP,
    kinds={"pandas", "postgres"},
    deps=[PROMOTED_MODEL, RECOMMENDATIONS, SIMILAR_ITEMS],
)
def popular_items(
    context: dg.AssetExecutionContext, ml_dataset: MLDataset, postgres: PostgresResource
) -> dg.MaterializeResult:
    """The fallback for unknown visitors: `popular` (most distinct visitors in the last 30 days) and
    `trending` (last 7 days' rate over the 28 days before), over the promoted model's cleaned data."""
    rows = popular_rows(ml_dataset.events, n=100)
    with postgres.connection() as conn:
        row = conn.execute(q.PROMOTED_MODEL).fetchone()
        version = int(row[0]) if row else 0
        write_serving_rows(conn, "popular_items", rows, version)
        summary = dict(conn.execute(q.POPULAR_ITEMS_SUMMARY, (version,)).fetchall())
    context.log.info(f"popular items: {summary}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": sum(summary.values()),
            "lists": dg.MetadataValue.json(summary),
            "model_version": version,
            "preview": dg.MetadataValue.md(rows.head(10).to_markdown(index=False)),
        }
    )


# --- helpers -----------------------------------------------------------------------------------------------

# table -> (prune, copy, COPY types, frame columns without model_version)
SERVING_TABLES: dict[str, tuple[str, str, tuple[str, ...], tuple[str, ...]]] = {
    "recommendations": (
        q.PRUNE_RECOMMENDATIONS,
        q.COPY_RECOMMENDATIONS,
        q.RECOMMENDATION_TYPES,
        ("visitorid", "rank", "itemid", "score"),
    ),
    "similar_items": (
        q.PRUNE_SIMILAR_ITEMS,
        q.COPY_SIMILAR_ITEMS,
        q.SIMILAR_ITEM_TYPES,
        ("itemid", "rank", "similar_itemid", "score"),
    ),
    "popular_items": (
        q.PRUNE_POPULAR_ITEMS,
        q.COPY_POPULAR_ITEMS,
        q.POPULAR_ITEM_TYPES,
        ("list", "rank", "itemid", "score", "visitors", "recent_events", "earlier_events", "trend"),
    ),
}


def write_serving_rows(conn: psycopg.Connection, table: str, frame: pd.DataFrame, version: int) -> None:
    """`version`'s rows of one serving table, beside the served version's (older versions are pruned).
    Write popular_items last: its rows tell readers that the version is complete."""
    prune, copy_sql, types, columns = SERVING_TABLES[table]
    conn.execute(prune, {"version": version})
    _copy_frame(conn, copy_sql, types, frame.assign(model_version=version), (*columns, "model_version"))


def _load_promoted(conn: psycopg.Connection) -> tuple[int, ModelBundle]:
    row = conn.execute(q.PROMOTED_MODEL).fetchone()
    if row is None:
        raise dg.Failure("no promoted model: materialize lightfm_model and promoted_model first")
    version, artefact, sha = int(row[0]), bytes(row[3]), row[4]
    if hashlib.sha256(artefact).hexdigest() != sha:
        raise dg.Failure(f"model v{version}: artefact does not match its sha256; retrain the model")
    return version, loads_bundle(artefact)


def _copy_frame(
    conn: psycopg.Connection,
    statement: str,
    types: tuple[str, ...],
    frame: pd.DataFrame,
    columns: tuple[str, ...],
) -> None:
    data = frame[list(columns)]
    values = [data[c].astype(object).where(data[c].notna(), None).tolist() for c in columns]
    _copy_rows(conn, statement, types, zip(*values, strict=True))


def _copy_rows(conn: psycopg.Connection, statement: str, types: tuple[str, ...], rows: Any) -> None:
    with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


def _finite(value: Any) -> Any:
    """JSON-safe: NaN and infinities (e.g. AUC without positives) become null."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _iso(ms: int) -> str:
    return pd.Timestamp(ms, unit="ms", tz="UTC").isoformat()
