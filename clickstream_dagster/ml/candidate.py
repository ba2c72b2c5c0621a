"""A run's candidates, trained from an `MLDataset`: every candidate type competes on validation (`ml.competition`),
the best is refitted on every cleaned event to serve, and each one's evidence and metrics are registered
(`register_candidates`, through `ml.registry`); the promotion gate (`ml.gate`) then decides on the best.

Each candidate configuration is fitted once, on train: that fit is its evidence, and the gate reuses it. Only
the best is fitted again, on every cleaned event, to serve. With `on_test`, every model is also refitted on
train + validation and scored on test, beside the next-item evaluation: the side-by-side table of
docs/recommendations.md (about two more minutes at full scale, so the daily job leaves it out by default).
The promoted model the best is compared with is read from the registry through the `connection` factory once
the candidates are scored; no connection is held while models train.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg

from clickstream_dagster.ml.bundle import ModelBundle, dumps_bundle
from clickstream_dagster.ml.competition import Contender, compete, incumbent_evidence, make_model
from clickstream_dagster.ml.dataset import MLDataset
from clickstream_dagster.ml.evaluate import PeakRSS, evaluate_split
from clickstream_dagster.ml.gate import GateSettings
from clickstream_dagster.ml.models import ItemKNNRecommender, LightFMRecommender, item_cosine_topk
from clickstream_dagster.ml.registry import RegisteredModel, promoted_model, register_model
from clickstream_dagster.ml.train import prepare_training_data

SIMILAR_ITEMS_K = 20  # neighbours per item kept for the similar_items table


@dataclass
class Candidates:
    contenders: list[Contender]  # every type's validation evidence, best first
    incumbent: str  # what serves now: a model type, or popularity when nothing was promoted
    incumbent_version: int | None
    incumbent_evidence: Contender
    bundle: ModelBundle  # the best type refitted on every cleaned event, to serve if promoted
    artefact: bytes  # the pickled bundle
    metrics: dict[str, Any]  # JSON-safe: the best's model_registry.metrics (the gate reads its evidence)
    cleaning: dict[str, int]  # rows removed by each cleaning step
    evaluation: (
        pd.DataFrame
    )  # every model's test and next-item metrics, one row per model (empty without test)
    metric: str  # the gate's metric, e.g. ndcg@10
    peak_memory_mb: float

    @property
    def best(self) -> Contender:
        return self.contenders[0]


def train_candidates(
    connection: Callable[[], AbstractContextManager[psycopg.Connection]],
    dataset: MLDataset,
    gate: GateSettings,
    on_test: bool = False,
) -> Candidates:
    """Score every candidate type on validation and the incumbent beside them, refit the best on all of
    `dataset`'s events, and with `on_test` evaluate every type on test."""
    params = dataset.params
    metric = gate.metric_at(params.k)
    with PeakRSS() as memory:
        report = evaluate_split(
            dataset.events, dataset.split, dataset.cleaning, dataset.items, params, on_test=on_test
        )
        t = time.perf_counter()
        selection = report.selection
        contenders = compete(report.validation, params, gate, selection)
        with connection() as conn:
            promoted = promoted_model(conn)
        served = promoted.served() if promoted is not None else None
        label, incumbent = incumbent_evidence(
            served[0] if served else None,
            served[1] if served else None,
            contenders,
            report.validation,
            params,
            gate,
        )
        competition_seconds = time.perf_counter() - t
        best = contenders[0]
        t = time.perf_counter()
        full = prepare_training_data(dataset.events, dataset.items, params.cleaning, params.interactions,
                                     params.features)  # fmt: skip
        model = make_model(best.model_type, best.config).fit(full.matrix, full.item_features, full.events)
        if isinstance(model, LightFMRecommender):
            model = model.compact()
            neighbours = None
        elif isinstance(model, ItemKNNRecommender):
            neighbours = None  # its own similarity is the item neighbourhood
        else:
            neighbours = item_cosine_topk(full.matrix.weights.astype(np.float32).tocsr(), SIMILAR_ITEMS_K)
        final_fit_seconds = time.perf_counter() - t
    same = served is not None and incumbent is best  # incumbent_evidence reuses a matching contender
    metrics = finite(
        {
            "metric": metric,
            "model_type": best.model_type,
            "validation": {c.model_type: _validation_row(c, metric) for c in contenders},
            "evidence": {
                "candidate": {"label": best.model_type, "estimate": best.estimate.to_dict()},
                "incumbent": {
                    "label": label,
                    "version": promoted.version if promoted is not None else None,
                    "estimate": incumbent.estimate.to_dict(),
                    "same_as_candidate": same,
                },
            },
            "test": {str(r.pop("model")): r for r in report.table.to_dict("records")},
            "gate": gate.to_dict(),
            "timings": {**report.timings, "competition": competition_seconds, "final_fit": final_fit_seconds},
            "peak_memory_mb": memory.peak_mb,
        }
    )
    data_window = {**dataset.window(), "served_model": full.window, **report.split.summary()}
    bundle = ModelBundle(
        model,
        {**params.to_dict(), "model": {"model_type": best.model_type, "config": best.config}},
        {},
        data_window,
        item_neighbours=neighbours,
    )
    return Candidates(
        contenders=contenders,
        incumbent=label,
        incumbent_version=promoted.version if promoted is not None else None,
        incumbent_evidence=incumbent,
        bundle=bundle,
        artefact=dumps_bundle(bundle),
        metrics=metrics,
        cleaning=dataset.cleaning,
        evaluation=report.table,
        metric=metric,
        peak_memory_mb=memory.peak_mb,
    )


def _validation_row(c: Contender, metric: str) -> dict[str, float]:
    """A contender's validation scores, with the gate metric's interval and sample size beside them."""
    return {
        **c.scores,
        f"{metric} low": c.estimate.low,
        f"{metric} high": c.estimate.high,
        "visitors": float(c.estimate.visitors),
        "fit_seconds": c.fit_seconds,
    }


def register_candidates(
    conn: psycopg.Connection, candidates: Candidates, run_id: str | None, models_dir: Path
) -> RegisteredModel:
    """Every contender as a registry row with its evidence: the others as rejected ("outranked"), without an
    artefact; then the best as this run's `candidate`, with its artefact exported to `models_dir`."""
    best = candidates.best
    metric = candidates.metric
    for c in candidates.contenders[1:]:
        register_model(
            conn,
            None,
            None,
            finite(
                {
                    "metric": metric,
                    "model_type": c.model_type,
                    "validation": {c.model_type: _validation_row(c, metric)},
                    "evidence": {"candidate": {"label": c.model_type, "estimate": c.estimate.to_dict()}},
                    "gate": candidates.metrics["gate"],
                }
            ),
            candidates.cleaning,
            run_id,
            models_dir,
            model_type=c.model_type,
            params={"model": {"model_type": c.model_type, "config": c.config}},
            data_window=candidates.bundle.data_window,
            selected=False,
            reason=(
                f"outranked: {c.model_type} {metric} {c.estimate.text()} is below {best.model_type} "
                f"{best.estimate.mean:.4f} on the same {c.estimate.visitors} validation visitors"
            ),
        )
    return register_model(
        conn,
        candidates.bundle,
        candidates.artefact,
        candidates.metrics,
        candidates.cleaning,
        run_id,
        models_dir,
        model_type=best.model_type,
    )


def finite(value: Any) -> Any:
    """JSON-safe: NaN and infinities (e.g. AUC without positives) become null."""
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value
