"""A run's candidate model, trained from an `MLDataset`: LightFM tuned on validation and evaluated on test
beside popularity, item-based and user-based CF; the promotion gate's evidence on validation (`ml.gate`);
the served model refitted on every cleaned event; and its artefact and JSON-safe metrics as the registry
stores them (`register_candidate`, through `ml.registry`).

The promoted model the candidate is compared with is read from the registry once the candidate's
configuration is chosen, through the `connection` factory; no connection is held while models train.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg

from clickstream_dagster.ml.bundle import ModelBundle, dumps_bundle
from clickstream_dagster.ml.config import LightFMParams
from clickstream_dagster.ml.dataset import MLDataset
from clickstream_dagster.ml.evaluate import PeakRSS, evaluate_split
from clickstream_dagster.ml.gate import GateSettings, validation_scores
from clickstream_dagster.ml.registry import RegisteredModel, promoted_model, register_model
from clickstream_dagster.ml.train import prepare_training_data, train_lightfm


@dataclass(frozen=True)
class Candidate:
    bundle: ModelBundle  # the served model (refitted on every cleaned event), params and data window
    artefact: bytes  # the pickled bundle
    metrics: dict[
        str, Any
    ]  # JSON-safe: model_registry.metrics (metric, validation, champion, test, gate, ...)
    validation: dict[str, dict[str, float]]  # the gate's evidence per model, as scored (NaN kept)
    cleaning: dict[str, int]  # rows removed by each cleaning step
    champion: dict[str, Any]  # which promoted model was compared: version, same_configuration
    evaluation: pd.DataFrame  # every model's test metrics, one row per model
    chosen: LightFMParams
    metric: str  # the gate's metric, e.g. ndcg@10
    peak_memory_mb: float


def train_candidate(
    connection: Callable[[], AbstractContextManager[psycopg.Connection]],
    dataset: MLDataset,
    gate: GateSettings,
) -> Candidate:
    """Evaluate every model on `dataset`'s split, score the gate's evidence against the promoted model (if
    any), and refit the chosen LightFM configuration on all of `dataset`'s events."""
    params = dataset.params
    with PeakRSS() as memory:
        report = evaluate_split(dataset.events, dataset.split, dataset.cleaning, dataset.items, params)
        chosen = report.lightfm_params
        with connection() as conn:
            promoted = promoted_model(conn)
        champion = promoted.champion() if promoted is not None else None
        validation, champion_info = validation_scores(report.validation, chosen, champion, params)
        started = time.perf_counter()
        full = prepare_training_data(dataset.events, dataset.items, params.cleaning, params.interactions,
                                     params.features)  # fmt: skip
        served = train_lightfm(full, chosen).compact()
        final_fit_seconds = time.perf_counter() - started
    metric = gate.metric_at(params.k)
    metrics = finite(
        {
            "metric": metric,
            "validation": validation,
            "champion": champion_info,
            "test": {str(r.pop("model")): r for r in report.table.to_dict("records")},
            "gate": gate.thresholds(),
            "timings": {**report.timings, "final_fit": final_fit_seconds},
            "peak_memory_mb": memory.peak_mb,
            "lightfm_seconds_per_epoch": float(np.mean(served.epoch_seconds))
            if served.epoch_seconds
            else 0.0,
        }
    )
    data_window = {**dataset.window(), "served_model": full.window, **report.split.summary()}
    bundle = ModelBundle(served, {**params.to_dict(), "lightfm": asdict(chosen)}, {}, data_window)
    return Candidate(
        bundle=bundle,
        artefact=dumps_bundle(bundle),
        metrics=metrics,
        validation=validation,
        cleaning=dataset.cleaning,
        champion=champion_info,
        evaluation=report.table,
        chosen=chosen,
        metric=metric,
        peak_memory_mb=memory.peak_mb,
    )


def register_candidate(
    conn: psycopg.Connection, candidate: Candidate, run_id: str | None, models_dir: Path
) -> RegisteredModel:
    """`candidate` as a new `candidate` row of the registry, its artefact exported to `models_dir`."""
    return register_model(
        conn, candidate.bundle, candidate.artefact, candidate.metrics, candidate.cleaning, run_id, models_dir
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
    return value
