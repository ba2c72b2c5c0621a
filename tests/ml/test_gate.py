"""The promotion gate's bootstrap and rule on hand-made evidence (no models, no database), checked against an
independent computation where there is one."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from clickstream_dagster.ml.candidate import finite
from clickstream_dagster.ml.gate import Estimate, GateSettings, bootstrap, decide, gate_decision

M = "ndcg@10"


def test_bootstrap_interval_matches_the_normal_approximation() -> None:
    """For a mean of n i.i.d. values the bootstrap interval is close to mean +- 1.96 s / sqrt(n)."""
    rng = np.random.default_rng(1)
    values = rng.binomial(1, 0.2, 4_000).astype(float) * rng.random(4_000)
    est = bootstrap(values, GateSettings(resamples=4_000, seed=3))
    half = 1.96 * values.std(ddof=1) / math.sqrt(len(values))
    assert est.mean == pytest.approx(values.mean())
    assert est.visitors == 4_000
    assert est.low < est.mean < est.high
    assert est.mean - est.low == pytest.approx(half, rel=0.1)
    assert est.high - est.mean == pytest.approx(half, rel=0.1)


def test_bootstrap_is_seeded_and_narrows_with_more_visitors() -> None:
    values = np.random.default_rng(2).random(500)
    settings = GateSettings(resamples=1_000, seed=7)
    assert bootstrap(values, settings) == bootstrap(values, settings)
    wide = bootstrap(values[:50], settings)
    narrow = bootstrap(values, settings)
    assert (wide.high - wide.low) > 2 * (narrow.high - narrow.low)


def test_bootstrap_of_nothing_is_empty() -> None:
    est = bootstrap([], GateSettings())
    assert est.visitors == 0 and math.isnan(est.mean)


def _est(mean: float, half: float, n: int) -> Estimate:
    return Estimate(mean, mean - half, mean + half, n)


def test_too_few_visitors_is_insufficient_evidence() -> None:
    d = decide("item_knn", _est(1.0, 0.0, 2), "popularity (nothing promoted yet)", _est(0.0, 0.0, 2), False,
               GateSettings(), M)  # fmt: skip
    assert not d.promote
    assert d.reason.startswith("insufficient evidence: 2 validation visitors (minimum 200)")


def test_a_lead_inside_the_noise_keeps_the_incumbent() -> None:
    d = decide(
        "lightfm", _est(0.151, 0.01, 5_000), "item_knn", _est(0.150, 0.01, 5_000), False, GateSettings(), M
    )
    assert not d.promote
    assert d.reason.startswith("not beyond noise: lightfm ndcg@10 0.1510 [0.1410, 0.1610]")
    assert "item_knn stays" in d.reason


def test_a_lead_beyond_the_noise_promotes() -> None:
    d = decide(
        "item_knn", _est(0.20, 0.01, 5_000), "lightfm", _est(0.15, 0.01, 5_000), False, GateSettings(), M
    )
    assert d.promote
    assert d.reason.startswith("passed: item_knn ndcg@10 0.2000 [0.1900, 0.2100] beats the incumbent lightfm")


def test_the_incumbents_own_configuration_never_replaces_it() -> None:
    d = decide(
        "lightfm", _est(0.30, 0.01, 5_000), "lightfm", _est(0.10, 0.01, 5_000), True, GateSettings(), M
    )
    assert not d.promote
    assert "still the best candidate" in d.reason


def _metrics(candidate: Estimate, incumbent: Estimate, same: bool = False) -> dict[str, Any]:
    return {
        "metric": M,
        "evidence": {
            "candidate": {"label": "session_knn", "estimate": candidate.to_dict()},
            "incumbent": {
                "label": "lightfm",
                "version": 3,
                "estimate": incumbent.to_dict(),
                "same_as_candidate": same,
            },
        },
        "gate": GateSettings(min_visitors=100).to_dict(),
    }


def test_gate_decision_reads_the_registry_row_and_its_recorded_settings() -> None:
    assert gate_decision(_metrics(_est(0.2, 0.01, 150), _est(0.1, 0.01, 150))).promote  # 150 >= its 100
    assert not gate_decision(_metrics(_est(0.2, 0.01, 99), _est(0.1, 0.01, 99))).promote
    assert not gate_decision(_metrics(_est(0.2, 0.01, 150), _est(0.1, 0.01, 150), same=True)).promote


def test_no_validation_visitor_at_all_is_insufficient_evidence_as_stored() -> None:
    """A sample so small that no visitor is left to validate on: the estimates are NaN, stored as null in the
    registry's JSON, and the gate reads them back and decides (it raised TypeError on the null before)."""
    empty = bootstrap([], GateSettings())
    stored = finite(_metrics(empty, empty))
    assert stored["evidence"]["candidate"]["estimate"]["mean"] is None
    decision = gate_decision(stored)
    assert not decision.promote
    assert decision.reason.startswith("insufficient evidence: 0 validation visitors (minimum 100)")


def test_settings_are_recorded_whole() -> None:
    settings = GateSettings(metric="recall", min_visitors=50, confidence=0.9, resamples=100, seed=4)
    assert GateSettings(**settings.to_dict()) == settings
    assert settings.metric_at(20) == "recall@20"


def test_finite_makes_metrics_json_safe() -> None:
    value = {
        "auc": float("nan"),
        "n": np.int64(3),
        "x": [np.float32(0.5), math.inf],
        1: (2.0,),
        "b": np.bool_(True),
    }
    assert finite(value) == {"auc": None, "n": 3, "x": [0.5, None], "1": [2.0], "b": True}
