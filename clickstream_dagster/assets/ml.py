"""Recommendations (group `ml`): the Dagster wiring of the recommender. Each asset takes its config and the
PostgreSQL resource, makes one call into the library and reports metadata; the work is done in
`clickstream_dagster.ml`:

- `ml.source` reads the ingested events and items, `ml.dataset` cleans and splits them (`ml_dataset`);
- `ml.training_tables` writes ml_interactions and the feature tables (`ml_interactions`, `ml_features`);
- `ml.candidate` trains, evaluates and registers the candidate in `ml.registry` (`lightfm_model`);
- `ml.gate` is the promotion policy, applied by `ml.registry` (`promotion_gate`, `promoted_model`);
- `ml.serving_tables` writes the serving tables from the promoted model (`recommendations`,
  `similar_items`, `popular_items`).

    clickstream_events + items -> ml_dataset -> ml_interactions, ml_features
                                             -> lightfm_model --[promotion_gate]--> promoted_model
                                                -> recommendations, similar_items, popular_items

Evaluation protocol (time-based, also in docs/recommendations.md): cleaned events are cut at the 70th and
85th percentiles of their timestamps into train, validation and test. LightFM's hyper-parameters are chosen
on validation (fit on train); every model is then refitted on train + validation and scored on the test
events of visitors it knows, never counting items they bought before the test period. The served model is
finally refitted on all cleaned events.
"""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace

import dagster as dg
import pandas as pd
from pydantic import Field

from clickstream_dagster.ml.candidate import finite, register_candidate, train_candidate
from clickstream_dagster.ml.config import MLParams
from clickstream_dagster.ml.dataset import MLDataset, build_dataset
from clickstream_dagster.ml.gate import GateSettings
from clickstream_dagster.ml.registry import (
    RegistryError,
    export_promoted,
    judge_run_candidate,
    promote_run_candidate,
)
from clickstream_dagster.ml.serving_tables import (
    publish_popular_items,
    publish_recommendations,
    publish_similar_items,
)
from clickstream_dagster.ml.source import read_training_input
from clickstream_dagster.ml.training_tables import (
    build_feature_tables,
    write_feature_tables,
    write_interactions,
)
from clickstream_dagster.resources import PostgresResource
from clickstream_dagster.settings import models_dir

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
SIMILAR_ITEMS_PER_ITEM = 20
POPULAR_ITEMS_PER_LIST = 100


@contextmanager
def _registry_failure() -> Iterator[None]:
    """A registry error (no promoted model, a damaged artefact) fails the step with its message."""
    try:
        yield
    except RegistryError as exc:
        raise dg.Failure(str(exc)) from exc


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
    with postgres.connection() as conn:
        read = read_training_input(conn, config.window_days)
    context.log.info(
        f"read {len(read.events):,} events and {len(read.items):,} items in {read.seconds:.1f} s"
    )
    dataset = build_dataset(read.events, read.items if len(read.items) else None, params)
    split = dataset.split.summary()
    context.log.info(f"cleaning: {dataset.cleaning}; split: {split}")
    return dg.Output(
        dataset,
        metadata={
            "dagster/row_count": len(dataset.events),
            "rows_read": len(read.events),
            "cleaning": dg.MetadataValue.json(dataset.cleaning),
            "split": dg.MetadataValue.json(split),
            "items_known": len(read.items),
            "validation_start": _iso(dataset.validation_start_ms),
            "test_start": _iso(dataset.test_start_ms),
        },
    )


@dg.asset(key=ML_INTERACTIONS, group_name=GROUP, kinds={"pandas", "postgres"})
def ml_interactions(
    context: dg.AssetExecutionContext, ml_dataset: MLDataset, postgres: PostgresResource
) -> dg.MaterializeResult:
    """One row per (visitor, item) and split: strength = sum of event-type weights (transaction > addtocart
    > view) decayed by age, with view/cart/purchase counts."""
    with postgres.connection() as conn:
        counts = write_interactions(conn, ml_dataset)
    per_split = {
        c.split: {"interactions": c.interactions, "visitors": c.visitors, "items": c.items} for c in counts
    }
    context.log.info(f"interactions: {per_split}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": sum(c.interactions for c in counts),
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
    tables = build_feature_tables(ml_dataset)
    with postgres.connection() as conn:
        write_feature_tables(conn, tables)
    context.log.info(f"features: {len(tables.visitors):,} visitors, {len(tables.items):,} items")
    return dg.MaterializeResult(
        metadata={
            "visitors": len(tables.visitors),
            "items": len(tables.items),
            "items_with_category": tables.items_with_category,
            "peak_view_hour_utc": tables.peak_view_hour,
            "median_cart_rate": tables.median_cart_rate,
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
    gate = GateSettings(config.gate_metric, config.min_lift_over_popularity, config.champion_tolerance)
    candidate = train_candidate(postgres.connection, replace(ml_dataset, params=params), gate)
    context.log.info(f"test evaluation:\n{candidate.evaluation.to_string(index=False)}")
    context.log.info(
        f"validation: {json.dumps(finite(candidate.validation))}; promoted model compared: {candidate.champion}"
    )
    with postgres.connection() as conn:
        model = register_candidate(conn, candidate, context.run.run_id, models_dir())
    context.log.info(
        f"registered candidate v{model.version} ({model.artefact_bytes / 1e6:.1f} MB) -> {model.path}"
    )
    metric, k, test = candidate.metric, params.k, candidate.metrics["test"]
    return dg.MaterializeResult(
        metadata={
            "model_version": model.version,
            "artefact_path": str(model.path),
            "artefact_mb": round(model.artefact_bytes / 1e6, 2),
            "chosen_params": dg.MetadataValue.json(asdict(candidate.chosen)),
            f"validation_{metric}": candidate.validation["candidate"][metric],
            f"validation_{metric}_popularity": candidate.validation["popularity"][metric],
            f"test_recall@{k}": test["lightfm"][f"recall@{k}"],
            f"test_ndcg@{k}": test["lightfm"][f"ndcg@{k}"],
            "evaluation": dg.MetadataValue.md(candidate.evaluation.to_markdown(index=False, floatfmt=".4f")),
            "peak_memory_mb": round(candidate.peak_memory_mb),
            "seconds": dg.MetadataValue.json(
                {n: round(v, 2) for n, v in candidate.metrics["timings"].items()}
            ),
        }
    )


@dg.asset_check(asset=LIGHTFM_MODEL, name=PROMOTION_GATE, blocking=True)
def promotion_gate(context: dg.AssetCheckExecutionContext, postgres: PostgresResource) -> dg.AssetCheckResult:
    """The candidate is served only if it beats popularity and the promoted model on validation; a
    rejected model stays in the registry with the reason."""
    with postgres.connection() as conn:
        verdict = judge_run_candidate(conn, context.run.run_id)
    if verdict is None:
        return dg.AssetCheckResult(passed=False, description="this run registered no model")
    context.log.info(f"model v{verdict.version}: {verdict.reason}")
    metric, validation = verdict.metrics["metric"], verdict.metrics["validation"]
    return dg.AssetCheckResult(
        passed=verdict.passed,
        description=verdict.reason,
        metadata={
            "model_version": verdict.version,
            "status_before": verdict.status_before,
            "candidate": validation["candidate"][metric],
            "popularity": validation["popularity"][metric],
            "champion": validation.get("champion", {}).get(metric, float("nan")),
        },
    )


@dg.asset(key=PROMOTED_MODEL, group_name=GROUP, kinds={"lightfm", "postgres"}, deps=[LIGHTFM_MODEL])
def promoted_model(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    """The served model: this run's candidate once the promotion gate passed (the previous one is retired);
    also exported as models/promoted.pkl."""
    with _registry_failure(), postgres.connection() as conn:
        promoted = promote_run_candidate(conn, context.run.run_id)
    path = export_promoted(promoted, models_dir())
    context.log.info(f"promoted v{promoted.version}; exported {path}")
    return dg.MaterializeResult(
        metadata={
            "model_version": promoted.version,
            "artefact_path": str(path),
            "artefact_sha256": promoted.artefact_sha256,
        }
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
    with _registry_failure():
        written = publish_recommendations(
            postgres.connection, config.top_n, config.active_days, config.max_visitors
        )
    context.log.info(
        f"{len(written.rows):,} recommendations for {written.known_visitors:,} of {written.active_visitors:,} "
        f"active visitors in {written.seconds:.1f} s"
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": written.rows_written,
            "visitors": written.visitors_written,
            "active_visitors": written.active_visitors,
            "active_unknown_to_model": written.active_visitors - written.known_visitors,
            "model_version": written.version,
            "preview": dg.MetadataValue.md(written.rows.head(10).to_markdown(index=False)),
        }
    )


@dg.asset(key=SIMILAR_ITEMS, group_name=GROUP, kinds={"lightfm", "postgres"}, deps=[PROMOTED_MODEL])
def similar_items(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    """For every item of the promoted model, the 20 most similar items by cosine of the item embeddings."""
    with _registry_failure():
        written = publish_similar_items(postgres.connection, k=SIMILAR_ITEMS_PER_ITEM)
    context.log.info(f"{written.rows:,} similar-item rows in {written.seconds:.1f} s")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": written.rows_written,
            "items": written.items_written,
            "model_version": written.version,
        }
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
    written = publish_popular_items(postgres.connection, ml_dataset.events, n=POPULAR_ITEMS_PER_LIST)
    context.log.info(f"popular items: {written.lists}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": sum(written.lists.values()),
            "lists": dg.MetadataValue.json(written.lists),
            "model_version": written.version,
            "preview": dg.MetadataValue.md(written.rows.head(10).to_markdown(index=False)),
        }
    )


def _iso(ms: int) -> str:
    return pd.Timestamp(ms, unit="ms", tz="UTC").isoformat()
