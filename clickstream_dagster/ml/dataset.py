"""The cleaned, split training set handed from the `ml_dataset` asset to the models: events once, the split
as two cut points (the three parts are views recomputed on demand, not stored copies)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from clickstream_dagster.ml.config import MLParams
from clickstream_dagster.ml.prep import clean_events
from clickstream_dagster.ml.split import TimeSplit, cut_points


@dataclass
class MLDataset:
    events: pd.DataFrame  # cleaned (`prep.clean_events`), sorted by time
    items: pd.DataFrame | None  # itemid, categoryid, available, category_path
    cleaning: dict[str, int]
    params: MLParams
    validation_start_ms: int
    test_start_ms: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def split(self) -> TimeSplit:
        ts = self.events["timestamp"].to_numpy()
        train = ts < self.validation_start_ms
        test = ts >= self.test_start_ms
        return TimeSplit(
            train=self.events.loc[train].reset_index(drop=True),
            validation=self.events.loc[~train & ~test].reset_index(drop=True),
            test=self.events.loc[test].reset_index(drop=True),
            validation_start_ms=self.validation_start_ms,
            test_start_ms=self.test_start_ms,
        )

    def window(self) -> dict[str, int]:
        ts = self.events["timestamp"].to_numpy()
        return {
            "start_ms": int(ts.min()) if len(ts) else 0,
            "end_ms": int(ts.max()) if len(ts) else 0,
            "events": len(ts),
            "visitors": int(self.events["visitorid"].nunique()),
            "items": int(self.events["itemid"].nunique()),
            "validation_start_ms": self.validation_start_ms,
            "test_start_ms": self.test_start_ms,
        }


def build_dataset(events: pd.DataFrame, items: pd.DataFrame | None, params: MLParams) -> MLDataset:
    """Clean `events` (counted steps) and cut the time split."""
    cleaned, cleaning = clean_events(events, params.cleaning)
    if len(cleaned) == 0:
        raise ValueError(
            "no events left to train on after cleaning: ingest events first (`make demo`, or run the "
            "producer while `clickstream up` runs)"
        )
    validation_start, test_start = cut_points(cleaned["timestamp"].to_numpy(dtype=np.int64), params.split)
    return MLDataset(cleaned, items, cleaning, params, validation_start, test_start)
