"""Training data for one fitting window, and the production LightFM fit on it.

The Dagster asset path is: `clean_events` on everything ingested -> `prepare_training_data` -> `train_lightfm`
(with the parameters `evaluate.select_lightfm` chose) -> `bundle.ModelBundle` -> the serving helpers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pandas as pd

from clickstream_dagster.ml.config import CleaningConfig, FeatureConfig, InteractionConfig, LightFMParams
from clickstream_dagster.ml.features import ItemFeatures, item_feature_matrix
from clickstream_dagster.ml.models import LightFMRecommender
from clickstream_dagster.ml.prep import InteractionMatrix, apply_min_support, build_interactions

logger = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """Everything a model needs from one window of cleaned events."""

    events: pd.DataFrame  # after minimum support
    interactions: pd.DataFrame  # one row per (visitor, item)
    matrix: InteractionMatrix
    item_features: ItemFeatures
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def window(self) -> dict[str, int]:
        ts = self.events["timestamp"]
        return {
            "start_ms": int(ts.min()) if len(ts) else 0,
            "end_ms": int(ts.max()) if len(ts) else 0,
            "events": len(ts),
            "visitors": len(self.matrix.user_ids),
            "items": len(self.matrix.item_ids),
            "interactions": int(self.matrix.weights.nnz),
        }


def prepare_training_data(
    events: pd.DataFrame,
    items: pd.DataFrame | None,
    cleaning: CleaningConfig | None = None,
    interactions: InteractionConfig | None = None,
    features: FeatureConfig | None = None,
    ref_ms: int | None = None,
) -> TrainingData:
    """Minimum support, interactions, matrix and LightFM item features from cleaned `events` (the output
    of `prep.clean_events`, restricted to the fitting window)."""
    kept, counts = apply_min_support(events, cleaning)
    table = build_interactions(kept, interactions, ref_ms)
    matrix = InteractionMatrix.from_interactions(table)
    f = features or FeatureConfig()
    item_features = item_feature_matrix(
        matrix.item_ids, items, f.identity_weight, f.category_weight, f.availability_weight, f.normalize
    )
    counts = {**counts, "interactions": len(table), "visitors": matrix.shape[0], "items": matrix.shape[1]}
    counts["item_feature_columns"] = item_features.matrix.shape[1]
    counts["purchased_pairs"] = int(matrix.purchased.nnz)
    return TrainingData(kept, table, matrix, item_features, counts)


def train_lightfm(
    data: TrainingData, params: LightFMParams | None = None, hybrid: bool = True
) -> LightFMRecommender:
    """Fit LightFM on `data` (with its item features when `hybrid`)."""
    model = LightFMRecommender(params)
    return model.fit(data.matrix, data.item_features if hybrid else None)
