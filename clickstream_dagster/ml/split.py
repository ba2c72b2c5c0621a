"""The time-based evaluation protocol.

1. **Clean the whole log** (`prep.clean_events`): missing values, exact duplicates, bots. These are
   row- and visitor-level data-quality rules; they do not look at what anyone does later.
2. **Split the events by time**, before any aggregation. With t70 and t85 the 70th and 85th percentiles of
   the cleaned event timestamps: train is `timestamp < t70`, validation is `t70 <= timestamp < t85`, test is
   `timestamp >= t85`. Each event lands in exactly one part, so no later event can reach an earlier part's
   interactions, weights or features.
3. **Fit only on the past.** Minimum support (`prep.apply_min_support`) and the recency decay's reference
   time are computed on the fitting events alone: train for model selection, train + validation for the
   final test run. The model catalogue is the items left in the fitting events.
4. **Select, then refit.** LightFM's hyper-parameters are chosen on validation (models fitted on train);
   every model is then refitted on train + validation and scored once on test.
5. **Who is scored, against what.** Warm visitors only: those with fitting events (a pure collaborative
   model cannot rank for anyone else; the serving layer falls back to the popular list for them). A
   visitor's relevant items are the catalogue items of any event type in the evaluation period, minus the
   items they bought in the fitting period (those are never recommended). Visitors left with no relevant
   item are not scored. All models are scored on the same visitors, ranking the whole catalogue.

The next-item (session) protocol follows the same cut points; see `nextitem`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from clickstream_dagster.ml.config import SplitConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TimeSplit:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    validation_start_ms: int  # t70: the first instant of validation
    test_start_ms: int  # t85: the first instant of test

    @property
    def train_and_validation(self) -> pd.DataFrame:
        return pd.concat([self.train, self.validation], ignore_index=True)

    def summary(self) -> dict[str, int]:
        return {
            "train_events": len(self.train),
            "validation_events": len(self.validation),
            "test_events": len(self.test),
            "validation_start_ms": self.validation_start_ms,
            "test_start_ms": self.test_start_ms,
        }


def cut_points(timestamps: np.ndarray, cfg: SplitConfig) -> tuple[int, int]:
    """The validation and test start times: quantiles of `timestamps` at train and train + validation."""
    total = cfg.train + cfg.validation + cfg.test
    if not np.isclose(total, 1.0) or min(cfg.train, cfg.validation, cfg.test) <= 0:
        raise ValueError(f"split fractions must be positive and sum to 1, got {cfg}")
    if len(timestamps) == 0:
        raise ValueError("cannot split an empty event log")
    lo, hi = np.quantile(timestamps, [cfg.train, cfg.train + cfg.validation], method="higher")
    return int(lo), int(hi)


def time_split(events: pd.DataFrame, cfg: SplitConfig | None = None) -> TimeSplit:
    """Train/validation/test events by the time protocol above."""
    cfg = cfg or SplitConfig()
    ts = events["timestamp"].to_numpy()
    t1, t2 = cut_points(ts, cfg)
    split = TimeSplit(
        train=events.loc[ts < t1].reset_index(drop=True),
        validation=events.loc[(ts >= t1) & (ts < t2)].reset_index(drop=True),
        test=events.loc[ts >= t2].reset_index(drop=True),
        validation_start_ms=t1,
        test_start_ms=t2,
    )
    logger.info(
        "time split: %d train / %d validation / %d test events (cuts at %s and %s)",
        len(split.train),
        len(split.validation),
        len(split.test),
        pd.Timestamp(t1, unit="ms", tz="UTC"),
        pd.Timestamp(t2, unit="ms", tz="UTC"),
    )
    return split
