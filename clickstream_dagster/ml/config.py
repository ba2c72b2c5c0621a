"""Parameters of the ML pipeline: one frozen dataclass per stage, all with working defaults.

`MLParams.from_dict` accepts a plain (possibly partial, nested) mapping, so a Dagster `Config` or a bench
can pass JSON-like values; `MLParams.to_dict` gives the same shape back for a model registry row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from typing import Any, TypeVar

from clickstream_dagster.analytics.sessions import DEFAULT_GAP_MINUTES

EVENT_WEIGHTS_DEFAULT: dict[str, float] = {"view": 1.0, "addtocart": 3.0, "transaction": 5.0}


@dataclass(frozen=True)
class CleaningConfig:
    """Thresholds of `prep.clean_events` and `prep.apply_min_support`."""

    # A visitor is a bot with more events than this in any 24 hours, or more than `max_events_per_hour` in
    # any 60 minutes (crawler speed: humans here peak near 40 an hour, the generator's bots at ~900) ...
    max_events_per_day: int = 300
    max_events_per_hour: int = 100
    # ... or if their views exceed both this quantile of all visitors' views and `bot_min_views` while they
    # (almost) never add to cart (carts per view below `bot_max_cart_rate`). The floor matters: on 200k
    # generated events p99.9 is 57 views, and the quantile alone flags 69 heavy human browsers (4% of all
    # events) where the data holds 2 bots.
    bot_view_quantile: float = 0.999
    bot_min_views: int = 1_000
    bot_max_cart_rate: float = 0.001
    # Support is counted in events, after the steps above.
    min_item_events: int = 2
    min_visitor_events: int = 2


@dataclass(frozen=True)
class InteractionConfig:
    """How events become (visitor, item) interaction strengths."""

    event_weights: dict[str, float] = field(default_factory=lambda: dict(EVENT_WEIGHTS_DEFAULT))
    # Each event counts 0.5 ** (age / half-life), age measured back from the newest event of the window.
    half_life_days: float | None = 30.0


@dataclass(frozen=True)
class FeatureConfig:
    """Weights of LightFM's item feature groups (see `features.item_feature_matrix`). By default each item is
    its own feature only: at full scale (2.76M generated events, `python -m bench lightfm`) the category
    share cost 0.025 validation NDCG@10 (0.133 against 0.158 at 64 components) and trained 2.8x slower per
    epoch. On small samples it helped (0.25-0.5 beat none by 0.03-0.05 NDCG@10 on 200k events, with many
    items seen a few times): set `category_weight` to 0.25 there, or on a catalogue with many new items."""

    identity_weight: float = 1.0
    category_weight: float = 0.0
    availability_weight: float = 0.0
    normalize: bool = True


@dataclass(frozen=True)
class SplitConfig:
    """Fractions of the time-based split; the cut points are these quantiles of the event timestamps."""

    train: float = 0.70
    validation: float = 0.15
    test: float = 0.15


@dataclass(frozen=True)
class LightFMParams:
    """One LightFM configuration. `epochs` is the number of passes over the training interactions."""

    no_components: int = 64
    learning_rate: float = 0.05
    epochs: int = 20
    item_alpha: float = 1e-6
    user_alpha: float = 0.0
    # WARP's negatives tried per positive: 30 instead of LightFM's 10 converged in 20 epochs instead of 60+
    # at full scale, to a better score (docs/recommendations.md, "LightFM's fair chance").
    max_sampled: int = 30
    loss: str = "warp"
    # Interaction strength as LightFM's sample weight: "log1p" (dampens heavy repeat viewers), "raw", or
    # "none" (every interaction weighs 1).
    sample_weight: str = "log1p"
    random_state: int = 42
    num_threads: int = 2


@dataclass(frozen=True)
class GridConfig:
    """The validation grid for LightFM. Every combination is trained once, warm-started from one epoch
    count of `epochs` to the next and scored on validation at each, so epochs cost no extra fits. Early
    stopping: a combination stops once `patience` checkpoints in a row have not beaten its best score."""

    # From `python -m bench lightfm` at full scale: 128 components beat 64 by 0.004 NDCG@10 (inside the noise)
    # at twice the cost of the grid, the final fit and the scoring, which the 10-minute daily job cannot pay;
    # 32 lost 0.026; learning rate 0.05 beat 0.1; item_alpha 0 and 1e-6 were level; WARP beat BPR and k-OS.
    no_components: tuple[int, ...] = (64,)
    learning_rate: tuple[float, ...] = (0.05,)
    item_alpha: tuple[float, ...] = (1e-6,)
    epochs: tuple[int, ...] = tuple(range(5, 65, 5))
    patience: int | None = 2  # None: every checkpoint of `epochs` is trained
    metric: str = "ndcg"  # one of precision, recall, f1, ndcg, auc
    k: int = 10
    max_seconds: float = 300.0  # no new combination starts after this; the first always runs
    max_eval_users: int | None = 5_000  # validation users sampled for selection (None: all)


@dataclass(frozen=True)
class KNNConfig:
    item_neighbours: int = 100
    user_neighbours: int = 50
    shrink: float = 0.0  # cosine(i, j) * n / (n + shrink); 0 is plain cosine
    # Item-based CF scores a visitor's own items too (each item counts as its own neighbour, cosine 1), as
    # the other models do: re-visits are frequent and only purchased items are excluded.
    item_self_similarity: bool = True


@dataclass(frozen=True)
class SessionConfig:
    """The next-item protocol (Ludewig et al.): views only, 30-minute gap, support filters, cutoff 20."""

    # The published protocol's gap, which is the sessions' default (`analytics.sessions`); kept at the
    # protocol's value whatever CLICKSTREAM_SESSION_GAP_MINUTES says, so scores stay comparable.
    gap_minutes: float = DEFAULT_GAP_MINUTES
    min_item_events: int = 5
    min_session_events: int = 2
    cutoff: int = 20
    sknn_neighbours: int = 100
    # Ludewig et al. keep repeated views; collapsing consecutive repeats of one item (a page reload, a
    # back-and-forth) shows how much of a score is "predict the item on screen" (about a fifth of next views
    # in generated sessions, docs/recommendations.md).
    collapse_repeats: bool = False
    max_test_sessions: int | None = None  # sample test sessions to bound the run time


@dataclass(frozen=True)
class MLParams:
    cleaning: CleaningConfig = field(default_factory=CleaningConfig)
    interactions: InteractionConfig = field(default_factory=InteractionConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    lightfm: LightFMParams = field(default_factory=LightFMParams)
    grid: GridConfig | None = field(default_factory=GridConfig)  # None: use `lightfm` as is
    knn: KNNConfig = field(default_factory=KNNConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    k: int = 10
    max_eval_users: int | None = None  # test users sampled for the ranking metrics (None: all)
    seed: int = 0
    # The model types that compete for promotion (ml.competition.CANDIDATE_TYPES, in that order).
    candidates: tuple[str, ...] = ("popularity", "item_knn", "user_knn", "session_knn", "lightfm")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> MLParams:
        """Defaults overridden by `values`, which may be partial at any level."""
        return _merge(cls(), values or {})


_T = TypeVar("_T")


def _merge(base: _T, values: Mapping[str, Any]) -> _T:
    known = {f.name: f for f in fields(base)}  # type: ignore[arg-type]
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(
            f"unknown ML parameter(s) {sorted(unknown)} for {type(base).__name__}; known: {sorted(known)}"
        )
    changes: dict[str, Any] = {}
    for name, value in values.items():
        current = getattr(base, name)
        if name == "grid" and current is None and isinstance(value, Mapping):
            current = GridConfig()
        if is_dataclass(current) and isinstance(value, Mapping):
            changes[name] = _merge(current, value)
        elif isinstance(current, tuple) and isinstance(value, list | tuple):
            changes[name] = tuple(value)
        else:
            changes[name] = value
    return replace(base, **changes)  # type: ignore[type-var]
