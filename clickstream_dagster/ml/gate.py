"""The promotion gate: which candidate serves, decided on evidence.

Every candidate type (popularity, item-based CF, user-based CF, session kNN, LightFM) is fitted on the
training period and scored on the same validation visitors (`ml.competition`); the best by the gate's
metric is the run's candidate. It is compared with the incumbent: the served model's type and configuration
refitted on the same data and scored on the same visitors (its stored artefact saw the validation period in
training, so scoring it as is would flatter it). When nothing has ever been promoted, the incumbent is
popularity, which is what the API serves then.

The rule (docs/recommendations.md, "The promotion gate"):

1. at least `min_visitors` validation visitors were scored, else "insufficient evidence";
2. the candidate is not the incumbent's own type and configuration (a re-run never replaces a model with
   itself);
3. the lower bound of the candidate's bootstrap confidence interval (`confidence`, over visitors,
   `resamples` resamples, seeded) beats the incumbent's estimate, else "not beyond noise".

Otherwise the incumbent stays, and the reason says why. The decision reads only what the registry stores
(`metrics["gate"]`, the estimates and intervals), so it can be re-read and re-checked later.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class GateSettings:
    metric: str = "ndcg"  # precision, recall, f1 or ndcg, @k on validation
    min_visitors: int = 200  # validation visitors needed before anything is promoted
    confidence: float = 0.95  # of the bootstrap interval
    resamples: int = 2000  # bootstrap resamples over visitors
    seed: int = 0

    def metric_at(self, k: int) -> str:
        """The metric's name in the scores, e.g. ndcg@10."""
        return f"{self.metric}@{k}"

    def to_dict(self) -> dict[str, Any]:
        """As recorded in a registry row's metrics["gate"]."""
        return asdict(self)


@dataclass(frozen=True)
class Estimate:
    """A metric's mean over validation visitors, with its bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    visitors: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Estimate:
        """As stored: an estimate over no visitor is NaN, which the registry's JSON holds as null."""

        def number(v: Any) -> float:
            return float("nan") if v is None else float(v)

        return cls(number(d["mean"]), number(d["low"]), number(d["high"]), int(d["visitors"]))

    def text(self) -> str:
        return f"{self.mean:.4f} [{self.low:.4f}, {self.high:.4f}]"


def bootstrap(values: npt.ArrayLike, settings: GateSettings) -> Estimate:
    """The mean of per-visitor `values` and its percentile bootstrap interval (resampling visitors)."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(settings.seed)
    means = np.empty(settings.resamples)
    # In blocks, so a large validation set never holds resamples x visitors indices at once.
    block = max(1, 2_000_000 // n)
    for lo in range(0, settings.resamples, block):
        hi = min(lo + block, settings.resamples)
        means[lo:hi] = x[rng.integers(0, n, size=(hi - lo, n))].mean(axis=1)
    tail = (1.0 - settings.confidence) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return Estimate(float(x.mean()), float(low), float(high), n)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(
    candidate: str,
    candidate_estimate: Estimate,
    incumbent: str,
    incumbent_estimate: Estimate,
    same_as_incumbent: bool,
    settings: GateSettings,
    metric: str,
) -> Decision:
    """The gate's rule (module docstring) on the estimates of the best candidate and of the incumbent."""
    n = candidate_estimate.visitors
    if n < settings.min_visitors:
        return Decision(
            False,
            f"insufficient evidence: {n} validation visitors (minimum {settings.min_visitors}); "
            f"{incumbent} stays",
        )
    if same_as_incumbent:
        return Decision(
            False,
            f"the incumbent {incumbent} is still the best candidate ({metric} {candidate_estimate.text()}); "
            "it stays",
        )
    if not candidate_estimate.low > incumbent_estimate.mean:
        return Decision(
            False,
            f"not beyond noise: {candidate} {metric} {candidate_estimate.text()} (lower bound) does not beat "
            f"the incumbent {incumbent} {incumbent_estimate.mean:.4f} over {n} visitors; {incumbent} stays",
        )
    return Decision(
        True,
        f"passed: {candidate} {metric} {candidate_estimate.text()} beats the incumbent {incumbent} "
        f"{incumbent_estimate.mean:.4f} over {n} visitors ({settings.confidence:.0%} interval)",
    )


def gate_decision(metrics: dict[str, Any]) -> Decision:
    """The decision from a registry row's metrics (as `competition` records them)."""
    gate = GateSettings(**metrics["gate"])
    evidence = metrics["evidence"]
    return decide(
        evidence["candidate"]["label"],
        Estimate.from_dict(evidence["candidate"]["estimate"]),
        evidence["incumbent"]["label"],
        Estimate.from_dict(evidence["incumbent"]["estimate"]),
        bool(evidence["incumbent"]["same_as_candidate"]),
        gate,
        metrics["metric"],
    )
