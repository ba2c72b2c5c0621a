"""Every candidate type competes on the same validation visitors; the best becomes the run's candidate.

The types (`CANDIDATE_TYPES`): popularity, item-based CF, user-based CF, session kNN (V-SKNN, Ludewig et
al.) and LightFM. Each is fitted once on the training period of the validation fold and scored on the same
sample of validation visitors; LightFM's evidence is its selection fit (the grid or its epochs on validation),
not a refit. The incumbent (the served model's type and configuration, or popularity when nothing was ever
promoted) is scored the same way, reusing the candidate of its type when the configuration is the same.
Per visitor, the gate's metric is kept, so the gate (`ml.gate`) can bootstrap intervals over visitors.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from clickstream_dagster.ml.config import KNNConfig, LightFMParams, MLParams, SessionConfig
from clickstream_dagster.ml.evaluate import Fold, LightFMSelection, evaluate_model_per_visitor
from clickstream_dagster.ml.gate import Estimate, FloatArray, GateSettings, bootstrap
from clickstream_dagster.ml.models import (
    ItemKNNRecommender,
    LightFMRecommender,
    PopularityRecommender,
    Recommender,
    SessionKNNRecommender,
    UserKNNRecommender,
)

CANDIDATE_TYPES = ("popularity", "item_knn", "user_knn", "session_knn", "lightfm")


def model_config(model_type: str, params: MLParams, lightfm: LightFMParams | None = None) -> dict[str, Any]:
    """The type-specific configuration a model of `model_type` is built from (JSON-safe)."""
    if model_type == "popularity":
        return {}
    if model_type in ("item_knn", "user_knn"):
        return asdict(params.knn)
    if model_type == "session_knn":
        return {"gap_minutes": params.session.gap_minutes, "neighbours": params.session.sknn_neighbours}
    if model_type == "lightfm":
        return asdict(lightfm or params.lightfm)
    raise ValueError(f"unknown model type {model_type!r}; known: {', '.join(CANDIDATE_TYPES)}")


def make_model(model_type: str, config: dict[str, Any]) -> Recommender:
    """A model of `model_type` from its configuration (`model_config`)."""
    if model_type == "popularity":
        return PopularityRecommender()
    if model_type == "item_knn":
        return ItemKNNRecommender(KNNConfig(**config))
    if model_type == "user_knn":
        return UserKNNRecommender(KNNConfig(**config))
    if model_type == "session_knn":
        return SessionKNNRecommender(
            SessionConfig(gap_minutes=config["gap_minutes"], sknn_neighbours=config["neighbours"])
        )
    if model_type == "lightfm":
        return LightFMRecommender(LightFMParams(**config))
    raise ValueError(f"unknown model type {model_type!r}; known: {', '.join(CANDIDATE_TYPES)}")


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """A configuration without what does not change the model (LightFM's thread count)."""
    return {k: v for k, v in config.items() if k != "num_threads"}


@dataclass
class Contender:
    """One model type's evidence on the validation visitors."""

    model_type: str
    config: dict[str, Any]
    scores: dict[str, float]  # mean metrics over the validation visitors (precision, recall, f1, ndcg @k)
    per_visitor: FloatArray  # the gate's metric, one value per validation visitor (same order for all)
    estimate: Estimate  # of the gate's metric, with its bootstrap interval
    fit_seconds: float

    def summary(self, metric: str) -> dict[str, Any]:
        """As the registry stores it (JSON-safe)."""
        return {
            "model_type": self.model_type,
            "config": self.config,
            "scores": self.scores,
            "metric": metric,
            "estimate": self.estimate.to_dict(),
            "fit_seconds": self.fit_seconds,
        }


def evidence_sample(params: MLParams) -> int | None:
    """Validation visitors scored for every contender: the LightFM selection's sample, so its fits count."""
    return params.grid.max_eval_users if params.grid is not None else params.max_eval_users


def score_contender(
    model_type: str, config: dict[str, Any], fold: Fold, params: MLParams, gate: GateSettings
) -> Contender:
    """Fit a model of this type on the fold's training data and score it on its validation visitors."""
    model = make_model(model_type, config)
    started = time.perf_counter()
    model.fit(fold.data.matrix, fold.data.item_features, fold.data.events)
    fit_seconds = time.perf_counter() - started
    scores, per_visitor = evaluate_model_per_visitor(
        model, fold, params.k, evidence_sample(params), params.seed, gate.metric
    )
    return Contender(model_type, config, scores, per_visitor, bootstrap(per_visitor, gate), fit_seconds)


def compete(
    fold: Fold, params: MLParams, gate: GateSettings, selection: LightFMSelection | None
) -> list[Contender]:
    """The evidence of every type in `params.candidates`, best first (by the gate metric's mean; ties: the
    simpler type). LightFM's is its grid selection fit when there was a grid, else a fit of its parameters."""
    unknown = set(params.candidates) - set(CANDIDATE_TYPES)
    if unknown or not params.candidates:
        raise ValueError(
            f"candidates {sorted(unknown) or '(none)'}: choose from {', '.join(CANDIDATE_TYPES)}"
        )
    out: list[Contender] = []
    for model_type in (t for t in CANDIDATE_TYPES if t in params.candidates):
        if model_type == "lightfm" and selection is not None:
            per_visitor = selection.per_visitor[gate.metric]
            out.append(
                Contender(
                    "lightfm",
                    asdict(selection.params),
                    selection.scores,
                    per_visitor,
                    bootstrap(per_visitor, gate),
                    selection.fit_seconds,
                )
            )
        else:
            out.append(score_contender(model_type, model_config(model_type, params), fold, params, gate))
    order = {t: i for i, t in enumerate(CANDIDATE_TYPES)}
    return sorted(out, key=lambda c: (-np.nan_to_num(c.estimate.mean, nan=-1.0), order[c.model_type]))


def incumbent_evidence(
    incumbent_type: str | None,
    incumbent_config: dict[str, Any] | None,
    contenders: list[Contender],
    fold: Fold,
    params: MLParams,
    gate: GateSettings,
) -> tuple[str, Contender]:
    """(label, evidence) of what serves now: the promoted model's type and configuration, scored like the
    contenders (a contender of the same type and configuration stands for it), or popularity."""
    if incumbent_type is None:
        popularity = next((c for c in contenders if c.model_type == "popularity"), None)
        if popularity is None:
            popularity = score_contender("popularity", {}, fold, params, gate)
        return "popularity (nothing promoted yet)", popularity
    config = incumbent_config or {}
    for c in contenders:
        if c.model_type == incumbent_type and comparable(c.config) == comparable(config):
            return incumbent_type, c
    return incumbent_type, score_contender(incumbent_type, config, fold, params, gate)
