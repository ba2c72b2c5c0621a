"""Recommendations (group `ml`): the Dagster wiring of the recommender. Each asset takes its config and the
PostgreSQL resource, makes one call into the library and reports metadata; the work is done in
`clickstream_dagster.ml`:

- `ml.source` reads the ingested events and items, `ml.dataset` cleans and splits them (`ml_dataset`);
- `ml.training_tables` writes ml_interactions and the feature tables (`ml_interactions`, `ml_features`);
- `ml.candidate` lets every candidate type compete (`ml.competition`) and registers them all in `ml.registry`
  (`candidate_model`);
- `ml.gate` is the promotion policy, applied by `ml.registry` (`promotion_gate` reports it,
  `promoted_model` acts on it);
- `ml.publish` writes the serving tables from the promoted model (`recommendations`,
  `similar_items`, `popular_items`).

    clickstream_events + items -> ml_dataset -> ml_interactions, ml_features
                                             -> candidate_model (check: promotion_gate) -> promoted_model
                                                -> recommendations, similar_items -> popular_items

The gate's "no" is a decision, not an error: the run succeeds whatever it decides. `promoted_model` has an
optional output: when the incumbent stays, it materializes nothing and every serving table after it is
skipped (left untouched). When no model was ever promoted, it materializes the popularity fallback: the
popular and trending lists are rebuilt and served to every visitor. Only errors fail the run.

Evaluation protocol (time-based, also in docs/recommendations.md): cleaned events are cut at the 70th and
85th percentiles of their timestamps into train, validation and test. LightFM's hyper-parameters are chosen
on validation (fit on train); every model is then refitted on train + validation and scored on the test
events of visitors it knows, never counting items they bought before the test period. The served model is
finally refitted on all cleaned events.
"""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import dagster as dg
import pandas as pd
from pydantic import Field

from clickstream_dagster.ml.candidate import Candidates, register_candidates, train_candidates
from clickstream_dagster.ml.config import MLParams
from clickstream_dagster.ml.dataset import MLDataset, build_dataset
from clickstream_dagster.ml.gate import GateSettings
from clickstream_dagster.ml.publish import (
    publish_popular_items,
    publish_recommendations,
    publish_similar_items,
)
from clickstream_dagster.ml.registry import (
    RegistryError,
    decide_and_promote,
    export_promoted,
    run_decision,
)
from clickstream_dagster.ml.source import read_training_input
from clickstream_dagster.ml.training_tables import (
    build_feature_tables,
    write_feature_tables,
    write_interactions,
)
from clickstream_dagster.resources import PostgresResource
from clickstream_dagster.settings import models_dir
from clickstream_dagster.sql.api import (
    POPULAR_ITEMS_PER_LIST,
    RECOMMENDATIONS_PER_VISITOR,
    SIMILAR_ITEMS_PER_ITEM,
)

GROUP = "ml"
ML_DATASET = dg.AssetKey("ml_dataset")
ML_INTERACTIONS = dg.AssetKey("ml_interactions")
ML_FEATURES = dg.AssetKey("ml_features")
CANDIDATE_MODEL = dg.AssetKey("candidate_model")
PROMOTED_MODEL = dg.AssetKey("promoted_model")
RECOMMENDATIONS = dg.AssetKey("recommendations")
SIMILAR_ITEMS = dg.AssetKey("similar_items")
POPULAR_ITEMS = dg.AssetKey("popular_items")
PROMOTION_GATE = "promotion_gate"


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
    # 180 days: the whole RetailRocket dataset (about 137 days), so its published figures hold, while a
    # deployment kept for years trains on half a year, whatever the history: at the interactions' 30-day
    # half-life an event 180 days old weighs 1/64 of a fresh one, and older ones add cost, not signal.
    window_days: float | None = Field(
        default=180.0,
        description="Train on the last N days of event time (null: every event ever ingested)",
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
    window = f"the last {config.window_days:g} days of event time" if config.window_days else "every event"
    context.log.info(
        f"read {len(read.events):,} events ({window}, from {_iso(read.since_ms)}) and {len(read.items):,} "
        f"items in {read.seconds:.1f} s"
    )
    dataset = build_dataset(read.events, read.items if len(read.items) else None, params)
    split = dataset.split.summary()
    context.log.info(f"cleaning: {dataset.cleaning}; split: {split}")
    return dg.Output(
        dataset,
        metadata={
            "dagster/row_count": len(dataset.events),
            "rows_read": len(read.events),
            "window_days": config.window_days or 0.0,
            "window_start": _iso(read.since_ms),
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
    gate_metric: str = Field(default="ndcg", description="precision, recall, f1 or ndcg (@k on validation)")
    min_visitors: int = Field(
        default=GateSettings().min_visitors,
        description="Validation visitors needed before any model is promoted",
    )
    confidence: float = Field(
        default=GateSettings().confidence,
        description="Of the bootstrap interval whose lower bound must beat the incumbent's estimate",
    )
    resamples: int = Field(default=GateSettings().resamples, description="Bootstrap resamples over visitors")
    test_evaluation: bool = Field(
        default=False,
        description="Also refit every candidate on train + validation and score it on test, with the next-item "
        "evaluation (the side-by-side table; about two more minutes at full scale)",
    )

    def gate(self, seed: int) -> GateSettings:
        return GateSettings(self.gate_metric, self.min_visitors, self.confidence, self.resamples, seed)


@dg.asset(key=CANDIDATE_MODEL, group_name=GROUP, kinds={"lightfm", "scipy", "postgres"})
def candidate_model(
    context: dg.AssetExecutionContext, config: ModelConfig, ml_dataset: MLDataset, postgres: PostgresResource
) -> dg.MaterializeResult:
    """Every candidate type (popularity, item-based CF, user-based CF, session kNN, LightFM tuned on
    validation) scored on the same validation visitors; the best, refitted on every cleaned event, is this
    run's candidate. Every candidate is registered with its evidence; with `test_evaluation`, all are also
    evaluated on test."""
    params = MLParams.from_dict({**ml_dataset.params.to_dict(), **json.loads(config.params_json)})
    candidates = train_candidates(
        postgres.connection,
        replace(ml_dataset, params=params),
        config.gate(params.seed),
        config.test_evaluation,
    )
    metric = candidates.metric
    if config.test_evaluation:
        context.log.info(f"test evaluation:\n{candidates.evaluation.to_string(index=False)}")
    context.log.info(
        "validation: "
        + "; ".join(f"{c.model_type} {metric} {c.estimate.text()}" for c in candidates.contenders)
        + f"; incumbent {candidates.incumbent} {candidates.incumbent_evidence.estimate.text()}"
    )
    with postgres.connection() as conn:
        model = register_candidates(conn, candidates, context.run.run_id, models_dir())
        _row, decision = run_decision(conn, context.run.run_id)
    best = candidates.best
    context.log.info(
        f"registered {len(candidates.contenders)} candidates; the best, {best.model_type}, as v{model.version} "
        f"({model.artefact_bytes / 1e6:.1f} MB) -> {model.path}; gate: {decision.reason}"
    )
    k, test = params.k, candidates.metrics["test"]
    return dg.MaterializeResult(
        metadata={
            "model_version": model.version,
            "model_type": best.model_type,
            "gate": "promote" if decision.promote else "keep",
            "gate_reason": decision.reason,
            "artefact_path": str(model.path),
            "artefact_mb": round(model.artefact_bytes / 1e6, 2),
            "config": dg.MetadataValue.json(best.config),
            "validation": dg.MetadataValue.md(_validation_table(candidates, metric)),
            f"validation_{metric}": best.estimate.mean,
            **(
                {
                    f"test_ndcg@{k}": (test.get(best.model_type) or {}).get(f"ndcg@{k}"),
                    "evaluation": dg.MetadataValue.md(
                        candidates.evaluation.to_markdown(index=False, floatfmt=".4f")
                    ),
                }
                if config.test_evaluation
                else {}
            ),
            "peak_memory_mb": round(candidates.peak_memory_mb),
            "seconds": dg.MetadataValue.json(
                {n: round(v, 2) for n, v in candidates.metrics["timings"].items()}
            ),
        }
    )


def _validation_table(candidates: Candidates, metric: str) -> str:
    lines = [f"| model | {metric} | 95 % interval | visitors |", "|---|---|---|---|"]
    for c in candidates.contenders:
        e = c.estimate
        lines.append(f"| {c.model_type} | {e.mean:.4f} | [{e.low:.4f}, {e.high:.4f}] | {e.visitors} |")
    e = candidates.incumbent_evidence.estimate
    lines.append(
        f"| incumbent: {candidates.incumbent} | {e.mean:.4f} | [{e.low:.4f}, {e.high:.4f}] | {e.visitors} |"
    )
    return "\n".join(lines)


@dg.asset_check(asset=CANDIDATE_MODEL, name=PROMOTION_GATE, blocking=False)
def promotion_gate(context: dg.AssetCheckExecutionContext, postgres: PostgresResource) -> dg.AssetCheckResult:
    """The gate's decision on the run's best candidate (`ml.gate`), from the evidence stored with it: served
    only with enough validation visitors and the lower bound of its bootstrap interval above the incumbent's
    estimate. The check passes whenever the gate decided, "promote" or "keep" (a kept incumbent is a normal
    outcome, not a failure); its description is the decision and its reason. `promoted_model` acts on it."""
    with postgres.connection() as conn:
        row, decision = run_decision(conn, context.run.run_id)
    evidence = row.metrics["evidence"]
    candidate, incumbent = evidence["candidate"], evidence["incumbent"]
    verb = "promote" if decision.promote else "keep the incumbent"
    context.log.info(f"model v{row.version}: {verb}: {decision.reason}")
    return dg.AssetCheckResult(
        passed=True,
        description=f"{verb}: {decision.reason}",
        metadata={
            "decision": "promote" if decision.promote else "keep",
            "model_version": row.version,
            "model_type": candidate["label"],
            "candidate": candidate["estimate"]["mean"],
            "candidate_low": candidate["estimate"]["low"],
            "candidate_high": candidate["estimate"]["high"],
            "visitors": candidate["estimate"]["visitors"],
            "incumbent": incumbent["label"],
            "incumbent_estimate": incumbent["estimate"]["mean"],
        },
    )


@dg.asset(
    key=PROMOTED_MODEL,
    group_name=GROUP,
    kinds={"lightfm", "postgres"},
    deps=[CANDIDATE_MODEL],
    output_required=False,
)
def promoted_model(
    context: dg.AssetExecutionContext, postgres: PostgresResource
) -> Iterator[dg.MaterializeResult]:
    """The served model: this run's candidate when the promotion gate passes (the previous one is retired;
    exported as models/promoted.pkl). When the incumbent stays, nothing is materialized and the serving
    tables after this asset are skipped, untouched. When no model was ever promoted, the popularity
    fallback: the popular and trending lists are rebuilt and answer every visitor."""
    with _registry_failure(), postgres.connection() as conn:
        decision = decide_and_promote(conn, context.run.run_id)
    common: dict[str, str | int] = {
        "decision": decision.outcome,
        "reason": decision.reason,
        "candidate_version": decision.candidate_version,
    }
    if decision.outcome == "kept":
        context.log.info(
            f"model v{decision.served_version} stays; the serving tables are left as they are: {decision.reason}"
        )
        return
    if decision.promoted is None:  # popularity: nothing was ever promoted
        context.log.info(f"no model is promoted; the popular lists will be served: {decision.reason}")
        yield dg.MaterializeResult(
            metadata={**common, "served": "popularity (the popular and trending lists)"}
        )
        return
    path = export_promoted(decision.promoted, models_dir())
    context.log.info(f"promoted v{decision.promoted.version}; exported {path}")
    yield dg.MaterializeResult(
        metadata={
            **common,
            "model_version": decision.promoted.version,
            "served": decision.promoted.model_type,
            "artefact_path": str(path),
            "artefact_sha256": decision.promoted.artefact_sha256,
        },
    )


# --- serving tables ----------------------------------------------------------------------------------------


class RecommendationsConfig(dg.Config):
    top_n: int = Field(default=RECOMMENDATIONS_PER_VISITOR, description="Recommendations kept per visitor")


@dg.asset(key=RECOMMENDATIONS, group_name=GROUP, kinds={"lightfm", "postgres"}, deps=[PROMOTED_MODEL])
def recommendations(
    context: dg.AssetExecutionContext, config: RecommendationsConfig, postgres: PostgresResource
) -> dg.MaterializeResult:
    """Top-N items for every visitor the promoted model knows, never an item they bought (none while no
    model is promoted: the popular lists answer then)."""
    with _registry_failure():
        written = publish_recommendations(postgres.connection, config.top_n)
    context.log.info(
        f"{written.rows_written:,} recommendations for all {written.known_visitors:,} visitors the model "
        f"knows in {written.seconds:.1f} s"
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": written.rows_written,
            "visitors": written.visitors_written,
            "visitors_known_to_model": written.known_visitors,
            "model_version": written.version,
            "preview": dg.MetadataValue.md(written.preview.to_markdown(index=False)),
        }
    )


@dg.asset(key=SIMILAR_ITEMS, group_name=GROUP, kinds={"lightfm", "postgres"}, deps=[PROMOTED_MODEL])
def similar_items(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    """For every item of the promoted model, the 20 most similar items by cosine of the item embeddings
    (none while no model is promoted)."""
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
    """The fallback for unknown visitors (and for every visitor while no model is promoted): `popular` (most
    distinct visitors in the last 30 days) and `trending` (last 7 days' rate over the 28 days before), over
    the served version's cleaned data."""
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
