"""The promotion gate's policy: the evidence a candidate is judged on and the decision taken from it.

The evidence is scored on one validation fold (fit on train, scored on validation): the candidate's
configuration, popularity, and the promoted model's configuration refitted on this data (its stored
artefact saw the validation period in training, so scoring it as is would flatter it). The decision reads
only a registry row's metrics, where the thresholds are recorded with the model, so it can be re-read later.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from clickstream_dagster.ml.config import LightFMParams, MLParams
from clickstream_dagster.ml.evaluate import Fold, evaluate_model
from clickstream_dagster.ml.models import LightFMRecommender, PopularityRecommender, Recommender


@dataclass(frozen=True)
class GateSettings:
    metric: str = "ndcg"  # precision, recall, f1, ndcg or auc (@k on validation)
    min_lift_over_popularity: float = 0.0  # the candidate must beat popularity by more than this fraction
    # ...and reach at least (1 - this) x the promoted model's score
    champion_tolerance: float = 0.01

    def metric_at(self, k: int) -> str:
        """The metric's name in the scores, e.g. ndcg@10 (auc has no cutoff)."""
        return f"{self.metric}@{k}" if self.metric != "auc" else "auc"

    def thresholds(self) -> dict[str, float]:
        """As recorded in a registry row's metrics["gate"]."""
        return {
            "min_lift_over_popularity": self.min_lift_over_popularity,
            "champion_tolerance": self.champion_tolerance,
        }


@dataclass(frozen=True)
class Champion:
    """The promoted model a candidate is compared with: its version and LightFM configuration."""

    version: int
    lightfm: LightFMParams


def validation_scores(
    fold: Fold, chosen: LightFMParams, champion: Champion | None, params: MLParams
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(scores per model, which promoted model was compared): the gate's evidence, every model fit on the
    fold's training data and scored on its evaluation period. When the champion's configuration is the
    candidate's, the candidate's scores stand for both."""
    k, seed = params.k, params.seed

    def score(model: Recommender) -> dict[str, float]:
        model.fit(fold.data.matrix, fold.data.item_features)
        return _rename(evaluate_model(model, fold, k, params.max_eval_users, seed), k)

    candidate = score(LightFMRecommender(chosen))
    out: dict[str, Any] = {"candidate": candidate, "popularity": score(PopularityRecommender())}
    info: dict[str, Any] = {"version": None, "same_configuration": None}
    if champion is not None:
        same = replace(champion.lightfm, num_threads=chosen.num_threads) == chosen
        out["champion"] = candidate if same else score(LightFMRecommender(champion.lightfm))
        info = {"version": champion.version, "same_configuration": same}
    return out, info


def _rename(metrics: dict[str, float], k: int) -> dict[str, float]:
    return {(m if m in ("auc", "users") else f"{m}@{k}"): float(v) for m, v in metrics.items()}


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


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
