"""The promotion gate's decision on hand-written registry metrics (no models, no database)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from clickstream_dagster.ml.candidate import finite
from clickstream_dagster.ml.gate import GateSettings, gate_decision

M = "ndcg@10"


def _metrics(candidate: float | None, popularity: float, champion: float | None = None) -> dict[str, Any]:
    validation: dict[str, Any] = {"candidate": {M: candidate}, "popularity": {M: popularity}}
    if champion is not None:
        validation["champion"] = {M: champion}
    return {
        "metric": M,
        "validation": validation,
        "champion": {"version": 3 if champion is not None else None, "same_configuration": False},
        "gate": GateSettings().thresholds(),
    }


def test_first_model_passes_when_it_beats_popularity() -> None:
    passed, reason = gate_decision(_metrics(0.30, 0.10))
    assert passed
    assert reason == "passed: validation ndcg@10 0.3000 beats popularity 0.1000; no model was promoted before"


def test_not_beating_popularity_is_rejected() -> None:
    for candidate in (0.10, 0.05, None):  # equal is not better; a missing score never passes
        passed, reason = gate_decision(_metrics(candidate, 0.10))
        assert not passed
        assert reason.startswith("rejected:") and "does not beat popularity 0.1000" in reason


def test_lift_over_popularity_is_required_when_set() -> None:
    metrics = _metrics(0.105, 0.10)
    metrics["gate"] = GateSettings(min_lift_over_popularity=0.1).thresholds()
    assert not gate_decision(metrics)[0]
    metrics["validation"]["candidate"][M] = 0.111
    assert gate_decision(metrics)[0]


def test_champion_within_tolerance_passes_below_it_is_rejected() -> None:
    passed, reason = gate_decision(_metrics(0.298, 0.10, champion=0.30))  # inside the 1 % tolerance
    assert passed and reason.endswith("reaches the promoted v3 0.3000")
    passed, reason = gate_decision(_metrics(0.29, 0.10, champion=0.30))
    assert not passed
    assert reason == "rejected: validation ndcg@10 0.2900 is below the promoted v3 0.3000 (tolerance 1%)"


def test_gate_settings_name_the_metric_and_record_the_thresholds() -> None:
    assert GateSettings().metric_at(10) == "ndcg@10"
    assert GateSettings(metric="auc").metric_at(10) == "auc"
    assert GateSettings(champion_tolerance=0.05).thresholds() == {
        "min_lift_over_popularity": 0.0,
        "champion_tolerance": 0.05,
    }


def test_finite_makes_metrics_json_safe() -> None:
    value = {"auc": float("nan"), "n": np.int64(3), "x": [np.float32(0.5), math.inf], 1: (2.0,)}
    assert finite(value) == {"auc": None, "n": 3, "x": [0.5, None], "1": [2.0]}
