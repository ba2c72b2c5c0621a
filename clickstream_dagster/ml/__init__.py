"""The recommender library: pandas/numpy/scipy/LightFM and, at its edges, PostgreSQL; no Dagster.

Data comes in as frames shaped like the clickstream_events and items tables. The modules, in pipeline
order:
- `config`: every parameter (`MLParams` and one dataclass per stage), from/to plain dicts;
- `prep`: cleaning with counted steps, minimum support, interactions (event weights, recency decay),
  the visitor x item matrix;
- `split`: the time-based 70/15/15 split and the written-down evaluation protocol;
- `features`: visitor behaviour, item popularity and trend, time-of-day profile, LightFM item features;
- `train`: training data of one window and the production LightFM fit;
- `models`: popularity, item-based CF, user-based CF and LightFM behind one interface;
- `metrics`: precision/recall/F1/NDCG@k, full AUC, coverage, HR/MRR (per visitor and batched);
- `evaluate`: every model side by side on test, LightFM grid on validation, `run_full_evaluation`;
- `nextitem`: the session (next-item) protocol of Ludewig et al. with its predictors;
- `ranking`: the rows of the serving tables: each visitor's ranked items, similar items, popular/trending lists;
- `bundle`: the model artefact (pickle bytes or models/*.pkl);
- `candidate`: a run's candidate: evaluation, the gate's evidence, the served refit, artefact and metrics;
- `gate`: the promotion policy (the evidence on validation and the decision from it).

The modules that read or write PostgreSQL take a psycopg connection (or a factory of them) from the
caller; the others never touch a database:
- `source`: the ingested events and the items, read to train on;
- `training_tables`: ml_interactions and the feature tables;
- `registry`: model_registry (register, judge, promote, load the promoted model);
- `publish`: writes the serving tables (recommendations, similar_items, popular_items) of the served version.
"""

from clickstream_dagster.ml.bundle import ModelBundle, dumps_bundle, load_bundle, loads_bundle, save_bundle
from clickstream_dagster.ml.config import MLParams
from clickstream_dagster.ml.evaluate import EvaluationReport, full_evaluation, run_full_evaluation
from clickstream_dagster.ml.models import (
    ItemKNNRecommender,
    LightFMRecommender,
    PopularityRecommender,
    Recommender,
    UserKNNRecommender,
)
from clickstream_dagster.ml.prep import apply_min_support, build_interactions, clean_events
from clickstream_dagster.ml.ranking import popular_items, recommendations_for_visitors, similar_items
from clickstream_dagster.ml.split import time_split
from clickstream_dagster.ml.train import TrainingData, prepare_training_data, train_lightfm

__all__ = [
    "EvaluationReport",
    "ItemKNNRecommender",
    "LightFMRecommender",
    "MLParams",
    "ModelBundle",
    "PopularityRecommender",
    "Recommender",
    "TrainingData",
    "UserKNNRecommender",
    "apply_min_support",
    "build_interactions",
    "clean_events",
    "dumps_bundle",
    "full_evaluation",
    "load_bundle",
    "loads_bundle",
    "popular_items",
    "prepare_training_data",
    "recommendations_for_visitors",
    "run_full_evaluation",
    "save_bundle",
    "similar_items",
    "time_split",
    "train_lightfm",
]
